package web_test

import (
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"

	"github.com/syncgate/syncgate/web"
)

// The served files are the repository's files, byte for byte, with a
// content type, an ETag and revalidation.
func TestHandlers(t *testing.T) {
	for _, tc := range []struct {
		h     http.Handler
		file  string
		ctype string
	}{
		{web.ClientJS(), "client.js", "text/javascript"},
		{web.Demo(), "index.html", "text/html"},
	} {
		want, err := os.ReadFile(tc.file)
		if err != nil {
			t.Fatal(err)
		}
		rec := httptest.NewRecorder()
		tc.h.ServeHTTP(rec, httptest.NewRequest("GET", "/", nil))
		if rec.Code != 200 || rec.Body.String() != string(want) {
			t.Fatalf("%s: status %d, body differs from the file: %v", tc.file, rec.Code, rec.Body.String() != string(want))
		}
		if ct := rec.Header().Get("Content-Type"); !strings.HasPrefix(ct, tc.ctype) {
			t.Errorf("%s: Content-Type %q", tc.file, ct)
		}
		etag := rec.Header().Get("ETag")
		if etag == "" || rec.Header().Get("Cache-Control") != "no-cache" {
			t.Errorf("%s: ETag %q, Cache-Control %q", tc.file, etag, rec.Header().Get("Cache-Control"))
		}
		req := httptest.NewRequest("GET", "/", nil)
		req.Header.Set("If-None-Match", etag)
		rec = httptest.NewRecorder()
		tc.h.ServeHTTP(rec, req)
		if rec.Code != http.StatusNotModified {
			t.Errorf("%s: revalidation answered %d, want 304", tc.file, rec.Code)
		}
	}
}
