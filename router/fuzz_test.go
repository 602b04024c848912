package router_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// FuzzRouterRequest: any request (method, path, body, as any of the
// router's callers or none) gets an answer that is a 2xx, a 4xx with a
// message, or the 429 of a limit: never a 5xx, never a crash. The router
// runs in process over the access tests' in-memory backend (a unit-test
// stand-in for Docker or Kubernetes, whose requests the backends' own tests
// make on the real thing).
func FuzzRouterRequest(f *testing.F) {
	e := newAccessEnv(f, false)
	tokens := []string{"", e.adminTok, e.aliceTok, e.bobTok, "upcu_" + strings.Repeat("x", 40), "garbage"}
	methods := []string{http.MethodGet, http.MethodPost, http.MethodDelete, http.MethodPut}
	for _, ep := range endpoints("i-0123456789ab") {
		m := 0
		for i, x := range methods {
			if x == ep[0] {
				m = i
			}
		}
		for who := range tokens {
			f.Add(uint8(m), ep[1], uint8(who), []byte(ep[2]))
		}
	}
	f.Add(uint8(1), "/v1/instances", uint8(2), []byte(`{"service":"pm","user":"alice"}`))
	f.Add(uint8(1), "/v1/instances", uint8(2), []byte(`{"service":"count","user":"alice","pm":"i-0123456789ab","grant":"upcg_x"}`))
	f.Add(uint8(1), "/service_request", uint8(0), []byte(`{"service":"pm","user":"alice"}`))
	h := e.srv.Config.Handler
	f.Fuzz(func(t *testing.T, method uint8, path string, who uint8, body []byte) {
		if !strings.HasPrefix(path, "/") || strings.ContainsAny(path, " \t\r\n#?") {
			return // not a request line a client can send
		}
		req, err := http.NewRequest(methods[int(method)%len(methods)], "http://router"+path, strings.NewReader(string(body)))
		if err != nil {
			return
		}
		if tok := tokens[int(who)%len(tokens)]; tok != "" {
			req.Header.Set("Authorization", "Bearer "+tok)
		}
		req.Header.Set("Content-Type", "application/json")
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code >= 500 {
			t.Fatalf("%s %s %s: %d %s", req.Method, path, body, rec.Code, rec.Body)
		}
		if rec.Code >= 400 && rec.Code != http.StatusNotFound && rec.Code != http.StatusMethodNotAllowed {
			var ans map[string]any
			if json.Unmarshal(rec.Body.Bytes(), &ans) != nil || ans["error"] == "" {
				t.Fatalf("%s %s %s: %d without a message: %q", req.Method, path, body, rec.Code, rec.Body)
			}
		}
	})
}
