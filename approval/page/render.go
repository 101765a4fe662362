package page

import (
	"embed"
	"fmt"
	"html/template"
	"net/http"
	"slices"
	"strings"
	"time"
	"unicode/utf16"
	"unicode/utf8"

	"github.com/countersign/countersign/approval"
	"github.com/countersign/countersign/approval/ceremony"
	"github.com/countersign/countersign/approval/freeze"
	"github.com/countersign/countersign/approval/grant"
	"github.com/countersign/countersign/authzdetails"
	"github.com/countersign/countersign/identity"
)

// Rendering: the templates and static files, and what the templates are
// given.

//go:embed web
var webFS embed.FS

var pages = template.Must(template.New("").Funcs(template.FuncMap{
	"lines":    displayLines,
	"server":   func(d string) []displayLine { return pickLines(d, false) },
	"quoted":   func(d string) []displayLine { return pickLines(d, true) },
	"json":     visibleJSON,
	"rfc3339":  func(t time.Time) string { return t.UTC().Format(time.RFC3339) },
	"short":    func(t time.Time) string { return t.UTC().Format("2006-01-02 15:04:05 UTC") },
	"join":     strings.Join,
	"contains": slices.Contains[[]string],
	"minutes":  func(d time.Duration) int { return int(d / time.Minute) },
	"single":   singleDisplay,
	"inBatch":  batchDisplay,
	"who":      whoApproves,
}).ParseFS(webFS, "web/*.html"))

// displayLine is one "Label: value" line of the display text; the page
// shows both halves verbatim.
type displayLine struct {
	Label, Value string
	Warning      bool
	Quote        bool // text the agent wrote (authzdetails.AgentPrefix), shown as its quotation
	// Head, set when Value is longer than pageFoldChars, is its start: the
	// page shows it folded, Head first and the whole Value a tap away. Only
	// the page folds; the display text that is signed and stored is whole.
	Head  string
	Chars int // characters of Value, when folded
}

// Values longer than pageFoldChars are folded on the page to their first
// pageFoldHead characters, so that a long one does not push the rest of
// the request (and the buttons) screens away.
const (
	pageFoldChars = 200
	pageFoldHead  = 120
)

// pickLines returns the server's lines, or the agent's quoted ones.
func pickLines(display string, quoted bool) []displayLine {
	var out []displayLine
	for _, l := range displayLines(display) {
		if l.Quote == quoted {
			out = append(out, l)
		}
	}
	return out
}

func displayLines(display string) []displayLine {
	var out []displayLine
	for _, l := range strings.Split(display, "\n") {
		label, value, ok := strings.Cut(l, ": ")
		if !ok {
			label, value = "", l
		}
		dl := displayLine{Label: label, Value: value, Warning: strings.HasPrefix(l, authzdetails.WarningPrefix), Quote: authzdetails.IsAgentLine(l)}
		if n := utf8.RuneCountInString(value); n > pageFoldChars {
			dl.Head, dl.Chars = string([]rune(value)[:pageFoldHead]), n
		}
		out = append(out, dl)
	}
	return out
}

// visibleJSON is raw JSON for the page with every character that would
// not be seen as itself (authzdetails.Invisible: bidi controls, zero-width and other
// invisible characters) written as a JSON \u escape. It is the same JSON
// value, but an override in a string shows as text instead of reordering
// what is read. JSON whitespace between tokens is kept.
func visibleJSON(raw []byte) string {
	var b strings.Builder
	for _, r := range string(raw) {
		switch {
		case r == '\n' || r == '\r' || r == '\t' || !authzdetails.Invisible(r):
			b.WriteRune(r)
		case r > 0xFFFF:
			hi, lo := utf16.EncodeRune(r)
			fmt.Fprintf(&b, `\u%04X\u%04X`, hi, lo)
		default:
			fmt.Fprintf(&b, `\u%04X`, r)
		}
	}
	return b.String()
}

// pendingShown bounds the pending list; the page says when more wait.
const pendingShown = 100

type pageData struct {
	Title        string
	CSRF         string
	Pending      []*approval.Request
	PendingTotal int // all pending requests, of which Pending lists the first
	History      []*approval.Request
	Keys         []ceremony.Credential
	Request      *approval.Request
	Approver     string
	NotFound     bool
	Holders      map[string]bool
	Offer        *grant.Offer       // the grant offered with Request (approval/grant.go)
	Grants       []*grant.Grant     // standing grants, newest first
	Agents       []freeze.AgentView // agents the page can freeze, and frozen ones (approval/freeze.go)
	Now          time.Time
	QR           *qrCode    // this page's public URL, for a phone to scan
	MaxBatch     int        // the pending list: how many one tap may approve
	Batch        *batchView // the batch confirmation page
	// Sign-in through the identity provider (oidc.go): its issuer on the
	// sign-in page, what went wrong, and who is signed in.
	Provider string
	Problem  string
	Person   *identity.Person
}

func (s *server) render(w http.ResponseWriter, r *http.Request, name string, d pageData) {
	s.renderStatus(w, r, http.StatusOK, name, d)
}

func (s *server) renderStatus(w http.ResponseWriter, r *http.Request, status int, name string, d pageData) {
	d.CSRF = csrfToken(w, r)
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	if err := pages.ExecuteTemplate(w, name, d); err != nil {
		s.opts.Logger.Error("approval page: render", "page", name, "err", err)
	}
}
