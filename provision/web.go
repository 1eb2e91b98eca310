package provision

import (
	"embed"
	"fmt"
	"io/fs"
	"net/http"
	"path"
	"strconv"
	"strings"
)

// webFiles is the donor web page: web/index.html and its script, style
// sheet and icon in web/static. Plain files, no build step; the page
// talks to /v1 with the bearer token the donor types in.
//
//go:embed web
var webFiles embed.FS

// webAsset is one embedded file as served.
type webAsset struct {
	body        []byte
	contentType string
}

// webTypes are the content types of the files the page is made of; a
// file of another kind in web/ is not served.
var webTypes = map[string]string{
	".html": "text/html; charset=utf-8",
	".js":   "text/javascript; charset=utf-8",
	".css":  "text/css; charset=utf-8",
	".svg":  "image/svg+xml",
}

// webAssets maps request paths ("/", "/static/app.js") to the embedded
// files, read once.
var webAssets = func() map[string]webAsset {
	out := map[string]webAsset{}
	add := func(urlPath, file string) {
		ct, ok := webTypes[path.Ext(file)]
		if !ok {
			return
		}
		body, err := webFiles.ReadFile(file)
		if err != nil {
			panic(fmt.Sprintf("provision: embedded %s: %v", file, err))
		}
		out[urlPath] = webAsset{body: body, contentType: ct}
	}
	add("/", "web/index.html")
	entries, err := fs.ReadDir(webFiles, "web/static")
	if err != nil {
		panic(fmt.Sprintf("provision: embedded web/static: %v", err))
	}
	for _, e := range entries {
		if !e.IsDir() {
			add("/static/"+e.Name(), "web/static/"+e.Name())
		}
	}
	return out
}()

// isWebPath reports whether p is the page's own: "/" and "/static/...".
func isWebPath(p string) bool {
	return p == "/" || strings.HasPrefix(p, "/static/")
}

// serveWeb answers GET and HEAD for the page's files. They hold no data
// and change nothing, so they need no authentication (the page asks for
// the token and sends it with its API calls); the security headers and
// the Host check have already been applied by ServeHTTP.
func (a *API) serveWeb(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		writeError(w, newError(http.StatusMethodNotAllowed, CodeMethodNotAllowed,
			fmt.Sprintf("%s is not allowed on %s (allowed: GET, HEAD)", r.Method, truncate(r.URL.Path, 80))))
		return
	}
	f, ok := webAssets[r.URL.Path]
	if !ok {
		writeError(w, newError(http.StatusNotFound, CodeNotFound, fmt.Sprintf("no file %s", truncate(r.URL.Path, 80))))
		return
	}
	h := w.Header()
	h.Set("Content-Type", f.contentType)
	h.Set("Content-Length", strconv.Itoa(len(f.body)))
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodGet {
		_, _ = w.Write(f.body)
	}
}
