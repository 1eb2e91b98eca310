package atomicfile

import (
	"os"
	"path/filepath"
	"testing"
)

func TestWriteReplacesAndLeavesNoTemporaryFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.json")
	for _, content := range []string{"old\n", "new\n"} {
		if err := Write(path, []byte(content), 0o640, -1, -1); err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(path)
		if err != nil || string(got) != content {
			t.Fatalf("read %q %v, want %q", got, err, content)
		}
	}
	if st, err := os.Stat(path); err != nil || st.Mode().Perm() != 0o640 {
		t.Fatalf("mode %v %v, want 0640", st.Mode(), err)
	}
	if temps, _ := filepath.Glob(TempGlob(path)); len(temps) != 0 {
		t.Fatalf("temporary files left: %v", temps)
	}
}

func TestWriteIntoMissingDirectoryFailsCleanly(t *testing.T) {
	path := filepath.Join(t.TempDir(), "missing", "state.json")
	if err := Write(path, []byte("x"), 0o600, -1, -1); err == nil {
		t.Fatal("write into a missing directory succeeded")
	}
}

func TestRemoveTemps(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.json")
	stale := TempName(path) // as a writer killed mid-write leaves it
	if err := os.WriteFile(stale, []byte("torn"), 0o600); err != nil {
		t.Fatal(err)
	}
	RemoveTemps(path)
	if _, err := os.Stat(stale); !os.IsNotExist(err) {
		t.Fatalf("stale temporary file still there: %v", err)
	}
}

// TestWriteNeverWidens: whatever mode is asked for or the old file had,
// nobody but the owner writes the new file and others never read it.
func TestWriteNeverWidens(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.json")
	if err := os.WriteFile(path, []byte("old"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, 0o666); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ ask, want os.FileMode }{{0o666, 0o640}, {0o777, 0o640}, {0o604, 0o600}, {0o600, 0o600}, {0o640, 0o640}} {
		if err := Write(path, []byte("new"), c.ask, -1, -1); err != nil {
			t.Fatal(err)
		}
		if st, err := os.Stat(path); err != nil || st.Mode().Perm() != c.want {
			t.Errorf("asked %04o: mode %v %v, want %04o", c.ask, st.Mode(), err, c.want)
		}
	}
}
