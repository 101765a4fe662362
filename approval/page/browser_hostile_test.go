package page

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/chromedp/chromedp"

	"github.com/countersign/countersign/approval/approvaltest"
	"github.com/countersign/countersign/authzdetails"
	"github.com/countersign/countersign/vocab"
)

// A request written to fool the approver: the memo claims authority and a
// different amount, the payee mixes Latin with a Cyrillic letter that looks
// Latin and a Hebrew name with digits. The page must show the memo as the
// agent's quotation, apart from and plainer than the server's lines, keep
// the payee in the order it was written, and flag the mixed scripts.
func TestBrowserShowsAgentTextAsAQuotationAndFlagsMixedScripts(t *testing.T) {
	b := newBrowserFixture(t)
	ctx := context.Background()
	tab := b.tab(t, b.alloc, true)
	b.enrollInBrowser(t, tab, "alice")

	const memo = "Approved by CFO — amount is really USD 5.00"
	const payee = "Асme Supplies חברה 2024 בע״מ"
	details, _ := json.Marshal([]map[string]any{{
		"type": "payment_initiation", "actions": []string{"transfer"},
		"instructedAmount": map[string]any{"currency": "USD", "amount": "500000.00"},
		"creditorName":     payee, "debtorAccount": map[string]any{"id": "operating"},
		"remittanceInformationUnstructured": memo,
	}})
	nr := paymentRequest("alice")
	nr.AuthorizationDetails = details
	req, err := b.svc.Create(ctx, nr)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasSuffix(req.Display, "\n"+authzdetails.AgentPrefix+" (reference): “"+memo+"”") {
		t.Fatalf("the signed display does not end with the quoted memo:\n%s", req.Display)
	}

	approvaltest.Open(t, tab, b.base+"/requests/"+req.ID)
	display := approvaltest.Text(t, tab, "#display")
	if strings.Contains(display, "CFO") {
		t.Errorf("the memo is among the server's lines:\n%s", display)
	}
	if !strings.Contains(display, "PAYEE NAME MIXES SCRIPTS (Cyrillic, Hebrew, Latin)") {
		t.Errorf("no mixed-script warning:\n%s", display)
	}
	quote := approvaltest.Text(t, tab, "#agent-text")
	if !strings.Contains(quote, "The agent wrote the following") || !strings.Contains(quote, "“"+memo+"”") {
		t.Errorf("the memo is not quoted as the agent's:\n%s", quote)
	}
	// Apart and plain: the quotation is outside the list of server lines,
	// not bold, and the payee is isolated so it reads as written.
	type layout struct {
		Inside     bool   `json:"inside"`
		QuoteBold  string `json:"quoteBold"`
		ValueBold  string `json:"valueBold"`
		PayeeIsBdi bool   `json:"payeeIsBdi"`
		PayeeText  string `json:"payeeText"`
	}
	js := `(() => {
		const q = document.querySelector("#agent-text blockquote");
		const dd = [...document.querySelectorAll("#display dd")].find(d => d.previousElementSibling.textContent === "To");
		return {
			inside: document.getElementById("display").contains(q),
			quoteBold: getComputedStyle(q).fontWeight,
			valueBold: getComputedStyle(dd).fontWeight,
			payeeIsBdi: dd.firstElementChild && dd.firstElementChild.tagName === "BDI",
			payeeText: dd.textContent,
		};
	})()`
	check, err := chromedp.Run(tab, chromedp.Evaluate[layout](js))
	if err != nil {
		t.Fatal(err)
	}
	if check.Inside || check.QuoteBold == check.ValueBold || check.QuoteBold >= "600" || !check.PayeeIsBdi || check.PayeeText != payee {
		t.Errorf("layout %+v", check)
	}
	b.screenshotAs(t, tab, "approver-hostile.png")

	// What the approver signs covers the quotation: approving still works.
	approvaltest.Approve(t, tab, b.base+"/requests/"+req.ID)
	waitText(t, tab, "state", string(vocab.StateApproved))
}

// screenshotAs keeps the page as docs/NAME with -update-screenshot, else
// in a temp directory.
func (b *browserFixture) screenshotAs(t *testing.T, tab context.Context, name string) {
	t.Helper()
	png, err := chromedp.Run(tab, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(png, []byte("\x89PNG")) {
		t.Fatalf("screenshot is not a PNG (%d bytes)", len(png))
	}
	path := filepath.Join(t.TempDir(), name)
	if *updateScreenshot {
		path = filepath.Join("..", "..", "docs", name)
	}
	if err := os.WriteFile(path, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s", path)
}
