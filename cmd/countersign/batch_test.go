package main

import (
	"encoding/json"
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/chromedp/chromedp"

	"github.com/countersign/countersign/approval/approvaltest"
	"github.com/countersign/countersign/config"
	"github.com/countersign/countersign/server/servertest"
)

// Three transfers wait for a human; the approver ticks them on the page,
// reads them on one confirmation page and taps once. Each call returns its
// result, the ledger moves exactly three times, and the export verifies
// offline with each approval tied to the one batch assertion.
func TestBrowserBatchApprovesThreeTransfersOnce(t *testing.T) {
	p := startProduct(t, func(c *config.Config) {
		tr := c.Tools["transfer"]
		tr.Batchable = true
		c.Tools["transfer"] = tr
	})
	tab := enrollInBrowser(t, p.stack, "alice")
	a := newAgent(t, p)
	before := operating(t, a)

	amounts := []int{20000, 21000, 22000}
	var calls []<-chan callResult
	var ids []string
	for i, amount := range amounts {
		call := a.start("transfer", transferArgs(amount))
		_, id := a.approvalURL(t, i+1, call)
		calls, ids = append(calls, call), append(ids, id)
	}
	do := func(steps ...chromedp.Action[chromedp.Void]) { approvaltest.Do(t, tab, steps...) }
	do(chromedp.Navigate(p.page+"/"), chromedp.WaitVisible(chromedp.CSS("#pending")))
	for _, id := range ids {
		do(chromedp.Click(chromedp.CSS(`#pending input[value="` + id + `"]`)))
	}
	approvaltest.WaitText(t, tab, "review-batch", "Review 3 selected")
	do(chromedp.Click(chromedp.CSS("#review-batch")), chromedp.WaitVisible(chromedp.CSS("#approve-batch")))
	page := approvaltest.Text(t, tab, "#batch")
	for _, want := range []string{"USD 20,000.00", "USD 21,000.00", "USD 22,000.00", "Acme Supplies"} {
		if !strings.Contains(page, want) {
			t.Errorf("confirmation page lacks %q:\n%s", want, page)
		}
	}
	do(chromedp.Click(chromedp.CSS("#approve-batch")))
	approvaltest.WaitText(t, tab, "outcome", "Approved all 3 with one tap.")
	for i, call := range calls {
		if res := await(t, call); res.IsError {
			t.Fatalf("transfer %d failed after the batch approval: %s", i, servertest.ResultText(res))
		}
	}
	want := int64(before)
	for _, amount := range amounts {
		want -= int64(amount) * 100
	}
	if got := operating(t, a); got != want {
		t.Fatalf("operating balance %d cents after three transfers from %d, want %d", got, before, want)
	}

	export, summary := exportAndVerify(t, p)
	if !strings.Contains(summary, "3 approvals met their quorum, 3 countersigned executions matched their approval") {
		t.Fatalf("verify summary %q does not show 3 approvals and 3 executions", summary)
	}
	if m := regexp.MustCompile(`(\d+) key assertions verified`).FindStringSubmatch(summary); m == nil || m[1] != "3" {
		t.Fatalf("verify summary %q does not count the 3 batched assertions", summary)
	}
	raw, err := os.ReadFile(export)
	if err != nil {
		t.Fatal(err)
	}
	executed, signatures := 0, map[string]int{}
	for _, line := range strings.Split(strings.TrimSpace(string(raw)), "\n") {
		var e struct {
			Kind, Tool, Signature string
			Batch                 []string `json:"batch_digests"`
		}
		if err := json.Unmarshal([]byte(line), &e); err != nil {
			t.Fatal(err)
		}
		if e.Tool == "transfer" && e.Kind == "call.executed" {
			executed++
		}
		if e.Kind == "approval.assertion" {
			if len(e.Batch) != 3 {
				t.Errorf("assertion entry without the batch of 3: %s", line)
			}
			signatures[e.Signature]++
		}
	}
	if executed != 3 || len(signatures) != 1 {
		t.Fatalf("%d transfers executed, %d distinct assertions; want 3 executions of one tap", executed, len(signatures))
	}
}
