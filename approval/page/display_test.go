package page

import (
	"context"
	"encoding/json"
	"io"
	"reflect"
	"strings"
	"testing"

	"github.com/chromedp/chromedp"

	"github.com/countersign/countersign/approval"
	"github.com/countersign/countersign/digest"
)

// The page shows the server's rendering, as text: markup in an argument
// arrives escaped and nothing from the arguments becomes an element.
func TestDisplayMCPPageEscapes(t *testing.T) {
	h := newHTTPFixture(t)
	nr := paymentRequest("alice")
	nr.Tool = "files__write_file"
	nr.Args = digest.MustParseArgs(`{"path":"<script>alert(1)</script>","content":"\"><img src=x onerror=alert(1)>` + "\u202e" + `"}`)
	nr.AuthorizationDetails = json.RawMessage(`[{"type":"mcp_tool_call","server":"files","tool":"write_file","arguments":` + string(nr.Args.JSON()) + `}]`)
	req, err := h.svc.Create(context.Background(), nr)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := h.client.Get(h.base + "/requests/" + req.ID)
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	body := string(raw)
	for _, want := range []string{
		`<dt>Upstream tool</dt><dd><bdi>files / write_file</bdi></dd>`,
		`<dt>args.path</dt><dd><bdi>&#34;&lt;script&gt;alert(1)&lt;/script&gt;&#34;</bdi></dd>`,
		`<dt>args.content</dt><dd><bdi>&#34;\&#34;&gt;&lt;img src=x onerror=alert(1)&gt;\u202E&#34;</bdi></dd>`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("page lacks %s", want)
		}
	}
	if n := strings.Count(body, "<script"); n != 1 { // the page's own app.js only
		t.Errorf("%d <script elements in the page", n)
	}
	if strings.Contains(body, "<img") || strings.Contains(body, "\u202e") {
		t.Errorf("markup or a bidi override from the arguments reached the page raw")
	}
}

// The page's raw authorization_details panel shows the same JSON value
// with invisible characters as \u escapes.
func TestDisplayRawDetailsVisible(t *testing.T) {
	raw := []byte("[{\"type\":\"mcp_tool_call\",\n \"arguments\":{\"v\u200b\":\"a\u202eb\U000E0041\u00a0\\u202e<\"}}]")
	got := visibleJSON(raw)
	want := "[{\"type\":\"mcp_tool_call\",\n \"arguments\":{\"v\\u200B\":\"a\\u202Eb\\uDB40\\uDC41\\u00A0\\u202e<\"}}]"
	if got != want {
		t.Fatalf("got  %s\nwant %s", got, want)
	}
	var a, b any
	if err := json.Unmarshal(raw, &a); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal([]byte(got), &b); err != nil {
		t.Fatalf("escaped JSON does not parse: %v", err)
	}
	if !reflect.DeepEqual(a, b) {
		t.Fatalf("escaping changed the value: %v vs %v", a, b)
	}
}

// A long unbroken argument wraps: the page does not scroll sideways.
func TestBrowserMCPDisplayWraps(t *testing.T) {
	b := newBrowserFixture(t)
	tab := b.tab(t, b.alloc, true)
	nr := paymentRequest("alice")
	long := strings.Repeat("z", 1500)
	nr.AuthorizationDetails = json.RawMessage(`[{"type":"mcp_tool_call","server":"files","tool":"write_file","arguments":{"` +
		strings.Repeat("k", 60) + `":{"` + strings.Repeat("K", 60) + `":"` + strings.Repeat("x", 190) + `"},"spaced":"a     b","long":"` + long + `"}}]`)
	req, err := b.svc.Create(context.Background(), nr)
	if err != nil {
		t.Fatal(err)
	}
	do(t, tab, chromedp.Navigate(b.base+"/requests/"+req.ID), chromedp.WaitVisible(chromedp.CSS("#display")))
	overflow, err := chromedp.Run(tab, chromedp.Evaluate[bool](`document.documentElement.scrollWidth > document.documentElement.clientWidth ||
		[...document.querySelectorAll("#display dt, #display dd")].some(e => e.scrollWidth > e.clientWidth)`))
	if err != nil {
		t.Fatal(err)
	}
	spaced, err := chromedp.Run(tab, chromedp.Evaluate[string](`[...document.querySelectorAll("#display dd")].find(d => d.previousElementSibling.textContent === "args.spaced").innerText`))
	if err != nil {
		t.Fatal(err)
	}
	if overflow {
		t.Error("the request page scrolls horizontally or a display line is cut off")
	}
	if spaced != `"a     b"` {
		t.Errorf("runs of spaces collapsed on the page: %q", spaced)
	}

	// A long value is folded to its start; a tap shows all of it, and
	// the page still does not scroll sideways.
	const longDD = `[...document.querySelectorAll("#display dd")].find(d => d.previousElementSibling.textContent === "args.long")`
	folded, err := chromedp.Run(tab, chromedp.Evaluate[string](longDD+`.innerText`))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(folded, long) || !strings.HasPrefix(folded, `"`+long[:pageFoldHead-1]) || !strings.Contains(folded, "show all 1502 characters") {
		t.Errorf("folded value reads %q", folded)
	}
	do(t, tab, chromedp.Click(chromedp.CSS(`#display details.fold summary`)))
	opened, err := chromedp.Run(tab, chromedp.Evaluate[string](longDD+`.innerText`))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(opened, `"`+long+`"`) || strings.Contains(opened, "show all") {
		t.Errorf("opened value reads %q", opened)
	}
	overflow, err = chromedp.Run(tab, chromedp.Evaluate[bool](`document.documentElement.scrollWidth > document.documentElement.clientWidth ||
		[...document.querySelectorAll("#display dt, #display dd")].some(e => e.scrollWidth > e.clientWidth)`))
	if err != nil || overflow {
		t.Errorf("the opened value overflows (%v)", err)
	}
}

// The page folds a long value but holds it whole: the display it was
// rendered from, and signed, is unchanged.
func TestDisplayPageFoldsLongValuesWhole(t *testing.T) {
	h := newHTTPFixture(t)
	long := strings.Repeat("0123456789", 50)
	req, err := h.svc.Create(context.Background(), mcpRequest(map[string]any{"content": long, "path": "/srv/a"}))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(req.Display, `args.content: "`+long+`"`) {
		t.Fatalf("display %s", req.Display)
	}
	resp, err := h.client.Get(h.base + "/requests/" + req.ID)
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	body := string(raw)
	for _, want := range []string{
		`<dt>args.content</dt><dd><details class="fold"><summary><bdi class="head">&#34;` + long[:pageFoldHead-1] + `</bdi>` +
			`<span class="more">… show all 502 characters</span><span class="less">fold</span></summary><bdi>&#34;` + long + `&#34;</bdi></details></dd>`,
		`<dt>args.path</dt><dd><bdi>&#34;/srv/a&#34;</bdi></dd>`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("page lacks %s", want)
		}
	}
}

// mcpRequest is a request for an upstream call with these arguments.
func mcpRequest(args map[string]any) approval.NewRequest {
	nr := paymentRequest("alice")
	nr.Tool = "files__write_file"
	raw, _ := json.Marshal(args)
	nr.Args, _ = digest.ParseArgs(raw)
	nr.AuthorizationDetails, _ = json.Marshal([]map[string]any{{
		"type": "mcp_tool_call", "server": "files", "tool": "write_file", "arguments": args,
	}})
	return nr
}
