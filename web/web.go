// Package web holds the browser-facing files every syncgate node serves:
// the JavaScript client library (client.js, an ES module with no build
// step), the Yjs provider on top of it (yjs.js, docs/yjs.md) and the
// collaborative demo page (index.html, a Yjs editor that loads Yjs from a
// CDN). They are embedded into the binary, so the file in the repository
// is the file served.
package web

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"net/http"
	"time"
)

//go:embed client.js index.html yjs.js
var files embed.FS

// ClientJS serves client.js.
func ClientJS() http.Handler { return serve("client.js", "text/javascript; charset=utf-8") }

// YjsJS serves yjs.js, the Yjs provider (an ES module on client.js).
func YjsJS() http.Handler { return serve("yjs.js", "text/javascript; charset=utf-8") }

// Demo serves the demo page, index.html.
func Demo() http.Handler { return serve("index.html", "text/html; charset=utf-8") }

func serve(name, ctype string) http.Handler {
	b, err := files.ReadFile(name)
	if err != nil {
		panic("web: " + name + " is not embedded: " + err.Error())
	}
	sum := sha256.Sum256(b)
	etag := `"` + hex.EncodeToString(sum[:8]) + `"`
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Type", ctype)
		// Revalidate each time (cheap: ETag): a node upgrade must not leave
		// browsers on an old client.
		h.Set("Cache-Control", "no-cache")
		h.Set("ETag", etag)
		h.Set("X-Content-Type-Options", "nosniff")
		http.ServeContent(w, r, name, time.Time{}, bytes.NewReader(b))
	})
}
