package page

import (
	"bytes"
	"context"
	"encoding/json"
	"image"
	"image/png"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/makiuchi-d/gozxing"
	gozxingqr "github.com/makiuchi-d/gozxing/qrcode"

	"github.com/countersign/countersign/approval"
	"github.com/countersign/countersign/approval/approvaltest"
	"github.com/countersign/countersign/digest"
	"github.com/countersign/countersign/vocab"
)

// A phone-sized screen: 390×844 CSS pixels (a current mid-size phone in
// portrait) at device scale factor 1, so the screenshot is the layout, one
// pixel a CSS pixel.
const phoneWidth, phoneHeight = 390, 844

// emulatePhone makes the tab a mobile viewport. Mobile matters: only then
// does Chromium honour <meta name="viewport">, as a phone does; without the
// tag the page would be laid out 980 pixels wide and shrunk.
var emulatePhone = chromedp.EmulateViewport(phoneWidth, phoneHeight, chromedp.EmulateMobile, chromedp.EmulateScale(1))

// longTransfer is a transfer whose payee, accounts and reference are as
// long as the display keeps them, with no spaces to break at.
func longTransfer(approvers ...string) approval.NewRequest {
	nr := paymentRequest(approvers...)
	payee := "Nordwestdeutsche Landesbausparkassen-Treuhandgesellschaft für Infrastrukturfinanzierung mbH & Co. KG (Zweigniederlassung)"
	nr.AuthorizationDetails = json.RawMessage(`[{"type":"payment_initiation","actions":["transfer"],` +
		`"instructedAmount":{"currency":"EUR","amount":"1234567.89"},"creditorName":"` + payee + `",` +
		`"creditorAccount":{"iban":"DE89370400440532013000"},"debtorAccount":{"id":"operating-eur-treasury-main-account-0042"},"newCounterparty":true,` +
		`"remittanceInformationUnstructured":"INV-2026-000042/PO-7781-ALPHA-BRAVO-CHARLIE-DELTA-ECHO-FOXTROT-GOLF-HOTEL-INDIA-JULIET-KILO-LIMA"}]`)
	nr.Summary = "Pay EUR 1,234,567.89 from operating-eur-treasury-main-account-0042 to " + payee
	return nr
}

// longGatewayCall is a call through the MCP gateway whose argument values
// are long unbroken strings: a deep path, a URL, a token-like blob.
func longGatewayCall(approvers ...string) approval.NewRequest {
	args := `{"path":"/srv/share/projects/2026/quarterly-reports/finance/consolidated-statements/drafts/final-final-v7-approved-by-legal.xlsx",` +
		`"source":"https://storage.internal.example.com/buckets/finance-archive/objects/2026/Q3/consolidated?versionId=3HL4kqtJlcpXroDTDmJ.rmSpXd3dIbrHY&partNumber=17",` +
		`"checksum":"sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a089f86d081884c7d659a2feaa0c55ad015",` +
		`"content":"` + strings.Repeat("Quarterly consolidated statement, final draft; ", 12) + `",` + // folded on the page
		`"overwrite":true}`
	return approval.NewRequest{
		Tool:                 "files__write_file",
		Agent:                "agent-reporting-pipeline-eu-west-1",
		Args:                 digest.MustParseArgs(args),
		AuthorizationDetails: json.RawMessage(`[{"type":"mcp_tool_call","server":"files","tool":"write_file","arguments":` + args + `}]`),
		Summary:              "Call write_file on files",
		Level:                "high",
		Rule:                 "always",
		Approvers:            approvers,
		Timeout:              time.Minute,
	}
}

// phoneLayout is what the page reports of its own layout.
type phoneLayout struct {
	ViewportWidth int      `json:"viewportWidth"` // document.documentElement.clientWidth
	ScrollWidth   int      `json:"scrollWidth"`
	Overflowing   []string `json:"overflowing"` // elements that reach past either side
	Buttons       []struct {
		ID                      string
		Display, Visibility     string
		Left, Right, Width      float64
		Height                  float64
		Top, Bottom             float64 // within the viewport, once scrolled into view
		HitIsButton, Obstructed bool
	} `json:"buttons"`
}

// checkPhoneLayout fails the test unless the page fits a phone: laid out at
// the device's width (the viewport tag works), no horizontal scroll, no
// element reaching past either edge, and each of the buttons displayed,
// inside the width, at least 44 pixels tall (a finger's tap target), and,
// once scrolled to, wholly on screen and the topmost element at its centre.
func checkPhoneLayout(t *testing.T, tab context.Context, page string, buttons ...string) {
	t.Helper()
	ids, _ := json.Marshal(append([]string{}, buttons...))
	raw, err := chromedp.Run(tab, chromedp.Evaluate[string](`(() => {
		const de = document.documentElement, w = de.clientWidth;
		const overflowing = [...document.body.querySelectorAll("*")].filter(e => {
			const r = e.getBoundingClientRect();
			return r.width > 0 && (r.left < -0.5 || r.right > w + 0.5);
		}).map(e => e.tagName.toLowerCase() + (e.id ? "#" + e.id : "") + (e.className ? "." + e.className : ""));
		const buttons = `+string(ids)+`.map(id => {
			const e = document.getElementById(id);
			if (!e) return { ID: id, Display: "(missing)" };
			e.scrollIntoView({ block: "center" });
			const r = e.getBoundingClientRect(), cs = getComputedStyle(e);
			const hit = document.elementFromPoint(r.left + r.width / 2, r.top + r.height / 2);
			return { ID: id, Display: cs.display, Visibility: cs.visibility, Left: r.left, Right: r.right, Width: r.width,
				Height: r.height, Top: r.top, Bottom: r.bottom, HitIsButton: hit === e || e.contains(hit),
				Obstructed: r.top < 0 || r.bottom > window.innerHeight };
		});
		window.scrollTo(0, 0);
		return JSON.stringify({ viewportWidth: w, scrollWidth: de.scrollWidth, overflowing, buttons });
	})()`))
	if err != nil {
		t.Fatal(err)
	}
	var l phoneLayout
	if err := json.Unmarshal([]byte(raw), &l); err != nil {
		t.Fatalf("%s: layout report %q: %v", page, raw, err)
	}
	if l.ViewportWidth != phoneWidth {
		t.Errorf("%s: laid out %d pixels wide on a %d-pixel phone (is <meta name=viewport> there?)", page, l.ViewportWidth, phoneWidth)
	}
	if l.ScrollWidth > l.ViewportWidth {
		t.Errorf("%s: scrolls horizontally: scrollWidth %d > clientWidth %d", page, l.ScrollWidth, l.ViewportWidth)
	}
	if len(l.Overflowing) > 0 {
		t.Errorf("%s: elements reach past the screen's edge: %v", page, l.Overflowing)
	}
	if len(l.Buttons) != len(buttons) {
		t.Fatalf("%s: report on %d buttons, want %d", page, len(l.Buttons), len(buttons))
	}
	for _, b := range l.Buttons {
		switch {
		case b.Display == "none" || b.Display == "(missing)" || b.Visibility != "visible":
			t.Errorf("%s: #%s not shown (display %s, visibility %s)", page, b.ID, b.Display, b.Visibility)
		case b.Left < 0 || b.Right > float64(l.ViewportWidth) || b.Width < 44 || b.Height < 44:
			t.Errorf("%s: #%s at x %.0f..%.0f, %.0f×%.0f: not wholly inside the %d-pixel width, or smaller than a 44-pixel tap target",
				page, b.ID, b.Left, b.Right, b.Width, b.Height, l.ViewportWidth)
		case b.Obstructed || !b.HitIsButton:
			t.Errorf("%s: #%s scrolled to is at y %.0f..%.0f of %d, topmost at its centre: %v", page, b.ID, b.Top, b.Bottom, phoneHeight, b.HitIsButton)
		}
	}
}

// An approver can read and decide a request on a phone-sized screen, and
// register a key there: the enrollment page and request pages with long
// values fit the width, and the buttons can be reached and tapped.
func TestBrowserPhoneLayout(t *testing.T) {
	b := newBrowserFixture(t)
	ctx := context.Background()
	tab := b.tab(t, b.alloc, true)
	do(t, tab, emulatePhone)

	link, err := b.svc.CreateEnrollment(ctx, "alice")
	if err != nil {
		t.Fatal(err)
	}
	do(t, tab, chromedp.Navigate(link), chromedp.WaitVisible(chromedp.CSS("#register")))
	checkPhoneLayout(t, tab, "enrollment page", "register")
	do(t, tab, chromedp.Click(chromedp.CSS("#register")))
	waitText(t, tab, "outcome", "Key registered")

	transfer, err := b.svc.Create(ctx, longTransfer("alice"))
	if err != nil {
		t.Fatal(err)
	}
	gateway, err := b.svc.Create(ctx, longGatewayCall("alice"))
	if err != nil {
		t.Fatal(err)
	}
	do(t, tab, chromedp.Navigate(b.base+"/"), chromedp.WaitVisible(chromedp.CSS("#pending a")))
	checkPhoneLayout(t, tab, "pending list")

	for _, tc := range []struct {
		name string
		req  *approval.Request
		want []string
	}{
		{"transfer", transfer, []string{"EUR 1,234,567.89", "Zweigniederlassung", "DE89370400440532013000", "NEW COUNTERPARTY", transfer.Code}},
		{"gateway call", gateway, []string{"final-final-v7-approved-by-legal.xlsx", "partNumber=17", "a089f86d081884c7d659a2feaa0c55ad015", gateway.Code}},
	} {
		do(t, tab, chromedp.Navigate(b.base+"/requests/"+tc.req.ID), chromedp.WaitVisible(chromedp.CSS("#approve")))
		page, err := chromedp.Run(tab, chromedp.Text(chromedp.CSS("#request")))
		if err != nil {
			t.Fatal(err)
		}
		for _, want := range tc.want {
			if !strings.Contains(page, want) {
				t.Errorf("%s page lacks %q", tc.name, want)
			}
		}
		checkPhoneLayout(t, tab, tc.name+" page", "approve", "deny")
		if tc.req == transfer {
			phoneScreenshot(t, tab)
		}
	}

	// Both taps work at this size: approve one, deny the other.
	do(t, tab, chromedp.Navigate(b.base+"/requests/"+transfer.ID), chromedp.WaitVisible(chromedp.CSS("#approve")), chromedp.Click(chromedp.CSS("#approve")))
	waitText(t, tab, "state", "approved")
	do(t, tab, chromedp.Navigate(b.base+"/requests/"+gateway.ID), chromedp.WaitVisible(chromedp.CSS("#deny")), chromedp.Click(chromedp.CSS("#deny")))
	waitText(t, tab, "state", "denied")
	for id, want := range map[string]vocab.State{transfer.ID: vocab.StateApproved, gateway.ID: vocab.StateDenied} {
		if r, err := b.svc.Get(ctx, id); err != nil || r.State != want {
			t.Errorf("request %s: %v %v, want %s", id, r, err, want)
		}
	}
}

// phoneScreenshot keeps what the phone shows on opening a request page:
// docs/approver-phone.png when COUNTERSIGN_UPDATE_SCREENSHOT=1, else a temp
// file. The test checks it is the phone's size.
func phoneScreenshot(t *testing.T, tab context.Context) {
	t.Helper()
	shot, err := chromedp.Run(tab, chromedp.CaptureScreenshot())
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := png.DecodeConfig(bytes.NewReader(shot))
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	if cfg.Width != phoneWidth || cfg.Height != phoneHeight {
		t.Errorf("screenshot is %d×%d, want the phone's %d×%d at scale 1", cfg.Width, cfg.Height, phoneWidth, phoneHeight)
	}
	path := filepath.Join(t.TempDir(), "approver-phone.png")
	if os.Getenv("COUNTERSIGN_UPDATE_SCREENSHOT") == "1" {
		path = filepath.Join("..", "..", "docs", "approver-phone.png")
	}
	if err := os.WriteFile(path, shot, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("phone screenshot: %s", path)
}

// decodeQR reads the QR code in a PNG of the code alone (its quiet zone
// included) with ZXing's decoder, an implementation independent of the
// encoder the page uses.
func decodeQR(t *testing.T, pngBytes []byte) string {
	t.Helper()
	img, _, err := image.Decode(bytes.NewReader(pngBytes))
	if err != nil {
		t.Fatal(err)
	}
	return decodePureQR(t, img)
}

// decodePureQR decodes an image that is one QR code and its quiet zone, as
// PURE_BARCODE: gozxing's finder-pattern search (v0.1.1) takes data modules
// for a finder pattern in about one code in a hundred, even on a clean
// image (3000 random page URLs: 30 missed searching, none missed as pure),
// which would make a test of our page fail at random.
func decodePureQR(t *testing.T, img image.Image) string {
	t.Helper()
	bmp, err := gozxing.NewBinaryBitmapFromImage(img)
	if err != nil {
		t.Fatal(err)
	}
	res, err := gozxingqr.NewQRCodeReader().Decode(bmp, map[gozxing.DecodeHintType]any{gozxing.DecodeHintType_PURE_BARCODE: true})
	if err != nil {
		t.Fatalf("QR code does not decode: %v", err)
	}
	return res.GetText()
}

// The enrollment page and a request page each show, on a computer's
// screen, a QR code that a camera reads as the page's own public URL; on a
// phone-sized screen the code gives its room back.
func TestBrowserPageQRCodeIsThePagesPublicURL(t *testing.T) {
	b := newBrowserFixture(t)
	ctx := context.Background()
	tab := b.tab(t, b.alloc, true)
	do(t, tab, chromedp.EmulateViewport(1024, 900, chromedp.EmulateScale(1)))

	link, err := b.svc.CreateEnrollment(ctx, "alice")
	if err != nil {
		t.Fatal(err)
	}
	req, err := b.svc.Create(ctx, paymentRequest("alice"))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ name, url string }{
		{"enrollment page", link},
		{"request page", b.base + "/requests/" + req.ID},
	} {
		do(t, tab, chromedp.Navigate(tc.url), chromedp.WaitVisible(chromedp.CSS("#handoff svg.qr")))
		shot, err := chromedp.Run(tab, chromedp.Screenshot(chromedp.CSS("#handoff svg.qr")))
		if err != nil {
			t.Fatal(err)
		}
		if got := decodeQR(t, shot); got != tc.url {
			t.Errorf("%s: QR code reads %q, want the page's URL %q", tc.name, got, tc.url)
		}
		if got := strings.TrimSpace(approvaltest.Text(t, tab, "#qr-url")); got != tc.url {
			t.Errorf("%s: link under the code reads %q, want %q", tc.name, got, tc.url)
		}
		// The fixture's public URL is localhost: the page says a phone
		// cannot reach it.
		if note := approvaltest.Text(t, tab, "#handoff"); !strings.Contains(note, "a phone cannot reach") {
			t.Errorf("%s: no localhost note beside the code: %q", tc.name, note)
		}
	}

	do(t, tab, emulatePhone, chromedp.Navigate(b.base+"/requests/"+req.ID), chromedp.WaitVisible(chromedp.CSS("#approve")))
	shown, err := chromedp.Run(tab, chromedp.Evaluate[bool](`getComputedStyle(document.getElementById("handoff")).display !== "none"`))
	if err != nil {
		t.Fatal(err)
	}
	if shown {
		t.Error("a phone-sized screen shows the QR code of the page it is on")
	}
}
