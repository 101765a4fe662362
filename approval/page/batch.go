package page

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"

	"github.com/countersign/countersign/approval"
	"github.com/countersign/countersign/vocab"
)

// The batch pages: the pending list has a checkbox on each batchable
// request; "Review selected" opens /batch?id=…&id=…, which shows every
// selected request in full, rendered as its own page renders it, and one
// button that signs them all (app.js posts /api/batch/begin and finish).

// displayOf is what the "requestdisplay" template renders: a request, and
// whether it is the page's only one (which alone gets element ids).
type displayOf struct {
	*approval.Request
	Single bool
}

func singleDisplay(r *approval.Request) displayOf { return displayOf{Request: r, Single: true} }
func batchDisplay(r *approval.Request) displayOf  { return displayOf{Request: r} }

// batchView is the confirmation page of a selection.
type batchView struct {
	IDs     []string
	Items   []batchItem
	OK      bool   // every request can be approved in this batch
	Problem string // the selection cannot be shown at all
}

type batchItem struct {
	*approval.Request
	Pos, Of int
	Refused string // why this one cannot be in a batch now, or ""
}

func (s *server) pageBatch(w http.ResponseWriter, r *http.Request) {
	ids := r.URL.Query()["id"]
	d := pageData{MaxBatch: s.svc.MaxBatch()}
	d.Title = "Approve together"
	d.Batch = &batchView{IDs: ids, OK: true}
	if err := s.svc.CheckBatch(ids); err != nil {
		w.WriteHeader(http.StatusBadRequest)
		d.Batch.Problem = fmt.Sprintf("Select 1 to %d different requests to approve together.", s.svc.MaxBatch())
		if errors.Is(err, approval.ErrNotFound) {
			d.Batch.Problem = "One of the selected requests does not exist."
		}
		s.render(w, r, "batch.html", d)
		return
	}
	for i, id := range ids {
		req, err := s.svc.Get(r.Context(), id)
		if errors.Is(err, approval.ErrNotFound) {
			w.WriteHeader(http.StatusNotFound)
			d.Batch.Problem = "One of the selected requests does not exist."
			s.render(w, r, "batch.html", d)
			return
		}
		if err != nil {
			s.fail(w, err)
			return
		}
		it := batchItem{Request: req, Pos: i + 1, Of: len(ids)}
		switch {
		case req.State != vocab.StatePending:
			it.Refused = "This request is " + string(req.State) + "; it can no longer be approved."
		case req.Level != vocab.LevelHigh || !req.Batchable:
			it.Refused = "This request cannot be approved together with others: it needs its own tap on its own page."
		}
		d.Batch.OK = d.Batch.OK && it.Refused == ""
		d.Batch.Items = append(d.Batch.Items, it)
	}
	var err error
	if d.Holders, err = s.holders(r.Context()); err != nil {
		s.fail(w, err)
		return
	}
	s.render(w, r, "batch.html", d)
}

type batchBody struct {
	Requests   []string        `json:"requests"`
	Ceremony   string          `json:"ceremony,omitempty"`
	Credential json.RawMessage `json:"credential,omitempty"`
}

func (s *server) apiBatchBegin(w http.ResponseWriter, r *http.Request) {
	var body batchBody
	if !decodeJSON(w, r, &body) {
		return
	}
	opts, err := s.svc.BeginBatch(r.Context(), body.Requests)
	if err != nil {
		s.failDecision(w, err)
		return
	}
	writeJSON(w, opts)
}

func (s *server) apiBatchFinish(w http.ResponseWriter, r *http.Request) {
	var body batchBody
	if !decodeJSON(w, r, &body) {
		return
	}
	reqs, err := s.svc.FinishBatch(r.Context(), body.Requests, body.Ceremony, body.Credential)
	if err != nil {
		s.failDecision(w, err)
		return
	}
	out := struct {
		Requests []requestJSON `json:"requests"`
	}{Requests: []requestJSON{}}
	for _, req := range reqs {
		out.Requests = append(out.Requests, toJSON(req))
	}
	writeJSON(w, out)
}
