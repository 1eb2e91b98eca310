package metrics

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"strconv"
	"syscall"
)

// userHZ is the unit of the clock tick counts in /proc/<pid>/stat: USER_HZ,
// which Linux fixes at 100 for userspace on every architecture.
const userHZ = 100

// processMetrics writes the process_* metrics from /proc/self. A value
// that cannot be read is left out rather than failing the scrape: the
// relayd_* metrics in the same scrape matter more.
type processMetrics struct {
	cpu, openFDs, maxFDs, virtual, virtualMax, resident, start family
	startTime                                                  float64 // Unix seconds; 0 if unknown
}

func newProcessMetrics() *processMetrics {
	gauge := func(name, help string) family { return family{name: name, help: help, typ: gaugeType} }
	p := &processMetrics{
		cpu:        family{name: "process_cpu_seconds_total", help: "Total user and system CPU time spent in seconds.", typ: counterType},
		openFDs:    gauge("process_open_fds", "Number of open file descriptors."),
		maxFDs:     gauge("process_max_fds", "Maximum number of open file descriptors."),
		virtual:    gauge("process_virtual_memory_bytes", "Virtual memory size in bytes."),
		virtualMax: gauge("process_virtual_memory_max_bytes", "Maximum amount of virtual memory available in bytes."),
		resident:   gauge("process_resident_memory_bytes", "Resident memory size in bytes."),
		start:      gauge("process_start_time_seconds", "Start time of the process since unix epoch in seconds."),
	}
	// The start time does not change: read it once.
	if st, err := readStat(); err == nil {
		if boot, err := bootTime(); err == nil {
			p.startTime = float64(boot) + float64(st.startTicks)/userHZ
		}
	}
	return p
}

func (p *processMetrics) write(w *textWriter) {
	if st, err := readStat(); err == nil {
		w.float(&p.cpu, float64(st.utime+st.stime)/userHZ)
		w.uint(&p.virtual, st.vsize)
		w.uint(&p.resident, st.rssPages*uint64(os.Getpagesize()))
	}
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err == nil {
		w.uint(&p.maxFDs, uint64(lim.Cur))
	}
	if n, err := countOpenFDs(); err == nil {
		w.uint(&p.openFDs, uint64(n))
	}
	if err := syscall.Getrlimit(syscall.RLIMIT_AS, &lim); err == nil {
		w.uint(&p.virtualMax, uint64(lim.Cur))
	}
	if p.startTime > 0 {
		w.float(&p.start, p.startTime)
	}
}

// procStat is what process_* needs of /proc/self/stat.
type procStat struct {
	utime, stime, startTicks uint64 // clock ticks
	vsize, rssPages          uint64
}

// readStat reads /proc/self/stat into a stack buffer: no allocation.
func readStat() (procStat, error) {
	var buf [1024]byte
	b, err := readSmallFile("/proc/self/stat", buf[:])
	if err != nil {
		return procStat{}, err
	}
	return parseStat(b)
}

// parseStat parses the contents of /proc/<pid>/stat.
func parseStat(b []byte) (procStat, error) {
	// The command name, in parentheses, may hold spaces and parentheses:
	// the fields are counted from the last ')'. After it come state
	// (field 3) ... utime (14), stime (15), starttime (22), vsize (23),
	// rss (24).
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return procStat{}, errors.New("/proc/self/stat: no command name")
	}
	var field [25]uint64
	n := 3
	for f := range bytes.FieldsSeq(b[i+1:]) {
		if n >= len(field) {
			break
		}
		if n >= 14 {
			v, ok := parseDecimal(f)
			if !ok {
				return procStat{}, fmt.Errorf("/proc/self/stat field %d: %q is not a number", n, f)
			}
			field[n] = v
		}
		n++
	}
	if n < len(field) {
		return procStat{}, fmt.Errorf("/proc/self/stat: %d fields", n-1)
	}
	return procStat{utime: field[14], stime: field[15], startTicks: field[22], vsize: field[23], rssPages: field[24]}, nil
}

// bootTime is the btime line of /proc/stat: the boot time in Unix seconds.
func bootTime() (uint64, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, err
	}
	for line := range bytes.Lines(b) {
		if v, ok := bytes.CutPrefix(line, []byte("btime ")); ok {
			return strconv.ParseUint(string(bytes.TrimSpace(v)), 10, 64)
		}
	}
	return 0, errors.New("/proc/stat: no btime")
}

// countOpenFDs counts the entries of /proc/self/fd (the descriptor that
// reads it included) by walking the raw directory records, so a relay
// holding thousands of sockets allocates nothing per descriptor.
func countOpenFDs() (int, error) {
	fd, err := syscall.Open("/proc/self/fd", syscall.O_RDONLY|syscall.O_DIRECTORY|syscall.O_CLOEXEC, 0)
	if err != nil {
		return 0, fmt.Errorf("open /proc/self/fd: %w", err)
	}
	defer syscall.Close(fd)
	var buf [4096]byte
	count := 0
	for {
		n, err := syscall.Getdents(fd, buf[:])
		if err != nil {
			return 0, fmt.Errorf("read /proc/self/fd: %w", err)
		}
		if n <= 0 {
			return count, nil
		}
		// linux_dirent64: inode (8 bytes), offset (8), record length (2),
		// type (1), then the NUL-terminated name.
		for rec := buf[:n]; len(rec) >= 20; {
			reclen := int(binary.NativeEndian.Uint16(rec[16:18]))
			if reclen < 20 || reclen > len(rec) {
				return 0, errors.New("read /proc/self/fd: bad directory record")
			}
			if name := rec[19:reclen]; name[0] != '.' {
				count++
			}
			rec = rec[reclen:]
		}
	}
}

// readSmallFile reads all of path into buf, which must be large enough.
func readSmallFile(path string, buf []byte) ([]byte, error) {
	fd, err := syscall.Open(path, syscall.O_RDONLY|syscall.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	defer syscall.Close(fd)
	n := 0
	for n < len(buf) {
		m, err := syscall.Read(fd, buf[n:])
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", path, err)
		}
		if m == 0 {
			return buf[:n], nil
		}
		n += m
	}
	return nil, fmt.Errorf("read %s: longer than %d bytes", path, len(buf))
}

// parseDecimal parses an unsigned decimal number without the string
// conversion strconv would need.
func parseDecimal(b []byte) (uint64, bool) {
	if len(b) == 0 || len(b) > 19 { // 19 digits always fit in a uint64
		return 0, false
	}
	var v uint64
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		v = v*10 + uint64(c-'0')
	}
	return v, true
}
