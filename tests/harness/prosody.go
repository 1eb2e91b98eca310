package harness

import (
	"bytes"
	"context"
	"embed"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"text/template"
)

//go:embed templates/*.tmpl
var templatesFS embed.FS

// templates holds the server configuration templates (read-only).
var templates = template.Must(template.New("").Option("missingkey=error").ParseFS(templatesFS, "templates/*.tmpl"))

// configData is the data the configuration templates are rendered with.
type configData struct {
	Dir, Domain, ComponentDomain, Secret string
	IP                                   string
	C2SPort, ComponentPort               uint16
	Node, Cookie                         string // ejabberd only
	DistPort                             uint16 // ejabberd only
	CertFile, KeyFile, CertAndKey        string // TLS
	PubsubDomain                         string
	Admins                               []string // bare JIDs
	PubsubMaxItems                       int      // 0 = the server's default
	PubsubStorage                        string   // "" = the server's default
}

func (s *XMPPServer) configData() configData {
	return configData{
		Dir: s.Dir, Domain: s.Domain, ComponentDomain: s.ComponentDomain, Secret: s.Secret,
		IP: s.C2S.Addr().String(), C2SPort: s.C2S.Port(), ComponentPort: s.Component.Port(),
		CertFile: s.pki.CertFile, KeyFile: s.pki.KeyFile, CertAndKey: s.pki.Combined,
		PubsubDomain: s.PubsubDomain, Admins: s.adminJIDs(), PubsubMaxItems: s.pubsubMaxItems,
		PubsubStorage: s.pubsubStorage,
	}
}

// adminJIDs are the administrators' bare JIDs.
func (s *XMPPServer) adminJIDs() []string {
	var out []string
	for _, u := range s.admins {
		out = append(out, u+"@"+s.Domain)
	}
	return out
}

// writeTemplate renders template name into path.
func writeTemplate(path, name string, data configData) error {
	var b bytes.Buffer
	if err := templates.ExecuteTemplate(&b, name, data); err != nil {
		return fmt.Errorf("render %s: %w", name, err)
	}
	if err := os.WriteFile(path, b.Bytes(), 0o644); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// StartProsody starts a private Prosody 0.12 (`prosody -F`) with a c2s
// listener for ServerDomain and a component listener for
// opt.ComponentDomain, and waits until it is ready. Users are registered
// with prosodyctl before the first start (that works while the server is
// down). The caller must Stop or Close the server.
func StartProsody(ctx context.Context, opt ServerOptions) (*XMPPServer, error) {
	s, err := newServer("prosody", opt)
	if err != nil {
		return nil, err
	}
	if err := s.setupProsody(ctx, opt.Users, opt.Bulk); err != nil {
		return nil, errors.Join(err, s.Close())
	}
	if err := s.Start(ctx); err != nil {
		return nil, errors.Join(err, s.Close())
	}
	return s, nil
}

func (s *XMPPServer) setupProsody(ctx context.Context, users map[string]string, bulk BulkUsers) error {
	for _, d := range []string{"data", "certs"} {
		if err := os.MkdirAll(filepath.Join(s.Dir, d), 0o755); err != nil {
			return fmt.Errorf("prosody dir: %w", err)
		}
	}
	cfg := filepath.Join(s.Dir, "prosody.cfg.lua")
	if err := writeTemplate(cfg, "prosody.cfg.lua.tmpl", s.configData()); err != nil {
		return err
	}
	s.logFiles = []string{
		filepath.Join(s.Dir, "stdout.log"),
		filepath.Join(s.Dir, "prosody.log"),
		filepath.Join(s.Dir, "prosody.err"),
	}
	s.launch = func() (*process, error) {
		return s.startLogged("prosody", "--config", cfg, "-F")
	}
	names := make([]string, 0, len(users))
	for u := range users {
		names = append(names, u)
	}
	sort.Strings(names)
	for _, u := range names {
		out, err := exec.CommandContext(ctx, "prosodyctl", "--config", cfg, "register", u, s.Domain, users[u]).CombinedOutput()
		if err != nil {
			return fmt.Errorf("prosodyctl register %s: %w: %s", u, err, out)
		}
	}
	return writeProsodyAccounts(filepath.Join(s.Dir, "data", s.Domain, "accounts"), bulk)
}

// writeProsodyAccounts writes bulk's accounts as Prosody's internal
// storage keeps them (authentication internal_plain: one Lua file per
// user), as prosodyctl register would, without starting one Lua process
// per user (a third of a second each). User names and the domain are
// plain letters and digits: no file-name escaping needed.
func writeProsodyAccounts(dir string, bulk BulkUsers) error {
	if bulk.Count == 0 {
		return nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("prosody accounts: %w", err)
	}
	body := []byte(fmt.Sprintf("return {\n\t[\"password\"] = %q;\n};\n", bulk.Password))
	for i := range bulk.Count {
		if err := os.WriteFile(filepath.Join(dir, bulk.Name(i)+".dat"), body, 0o644); err != nil {
			return fmt.Errorf("prosody account %s: %w", bulk.Name(i), err)
		}
	}
	return nil
}
