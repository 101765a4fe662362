package feed_test

import (
	"encoding/json"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/countersign/countersign/audit"
	"github.com/countersign/countersign/audit/feed"
	"github.com/countersign/countersign/vocab"
)

// ocsfPins is what each entry kind reads as in OCSF 1.6.0 API Activity:
// activity_id (1 Create, 3 Update, 4 Delete, 99 Other), status_id (0
// Unknown, 1 Success, 2 Failure), severity_id (1 Informational, 3
// Medium, 4 High). README's "A feed for the SIEM" says the same.
var ocsfPins = map[vocab.Kind][3]int{
	vocab.KindCallAllowed:       {99, 1, 1},
	vocab.KindCallDenied:        {99, 2, 3},
	vocab.KindCallRejected:      {99, 2, 3},
	vocab.KindCallRateLimited:   {99, 2, 3},
	vocab.KindCallExecuted:      {99, 1, 1},
	vocab.KindCallFailed:        {99, 2, 1},
	vocab.KindCallInterrupted:   {99, 0, 4},
	vocab.KindCallReconciled:    {3, 1, 1},
	vocab.KindApprovalRequested: {1, 1, 1},
	vocab.KindApprovalAssertion: {99, 1, 1},
	vocab.KindApprovalApproved:  {3, 1, 1},
	vocab.KindApprovalDenied:    {3, 2, 3},
	vocab.KindApprovalExpired:   {3, 2, 1},
	vocab.KindApprovalCancelled: {3, 2, 1},
	vocab.KindApprovalRejected:  {99, 2, 4},
	vocab.KindApproverEnrolled:  {1, 1, 3},
	vocab.KindCredentialRevoked: {4, 1, 3},
	vocab.KindEnrollmentCreated: {1, 1, 3},
	vocab.KindPolicyLoaded:      {3, 1, 3},
	vocab.KindNotifySent:        {99, 1, 1},
	vocab.KindGrantRevoked:      {4, 1, 3},
	vocab.KindAgentFrozen:       {3, 1, 4},
	vocab.KindAgentUnfrozen:     {3, 1, 3},
	vocab.KindApproverSuspended: {3, 1, 3},
	vocab.KindToolPinned:        {1, 1, 1},
	vocab.KindToolChanged:       {3, 1, 4},
	vocab.KindToolAccepted:      {3, 1, 3},
	vocab.KindRollbackAccepted:  {99, 1, 4},
	vocab.KindAuditPruned:       {4, 1, 3},
	vocab.KindKeyRotated:        {3, 1, 4},
}

// required are the attributes OCSF 1.6.0 requires of an API Activity
// event (base event, class and the objects' own required members), plus
// the record-integrity members this feed promises.
var required = [][]string{
	{"class_uid"}, {"category_uid"}, {"activity_id"}, {"type_uid"}, {"time"}, {"severity_id"},
	{"metadata", "version"}, {"metadata", "product", "vendor_name"}, {"metadata", "product", "name"},
	{"actor", "user"}, {"api", "operation"}, {"src_endpoint"},
	{"unmapped", "countersign", "seq"}, {"unmapped", "countersign", "hash"}, {"unmapped", "countersign", "prev_hash"},
	{"unmapped", "countersign", "checkpoint", "size"}, {"unmapped", "countersign", "checkpoint", "note"},
	{"unmapped", "countersign", "entry"},
}

func TestOCSFMapsEveryKind(t *testing.T) {
	cp := &feed.Checkpoint{Size: 9, Note: "countersign-log\n9\nroot\n\n— sig\n"}
	for _, kind := range vocab.Kinds() {
		pin, ok := ocsfPins[kind]
		if !ok {
			t.Errorf("kind %s has no pinned OCSF mapping: add it here, in ocsf.go and in README", kind)
			continue
		}
		e := audit.Entry{Seq: 7, Time: "2026-03-01T09:30:01.000000001Z", Kind: kind, Agent: "agent-1",
			Hash: "ab12", PrevHash: "cd34", Reason: "why"}
		ev, err := feed.OCSF(e, cp)
		if err != nil {
			t.Fatal(err)
		}
		if got := [3]int{ev.ActivityID, ev.StatusID, ev.SeverityID}; got != pin {
			t.Errorf("%s: activity, status, severity = %v, want %v", kind, got, pin)
		}
		if ev.ClassUID != 6003 || ev.CategoryUID != 6 || ev.TypeUID != 600300+pin[0] {
			t.Errorf("%s: class %d category %d type %d", kind, ev.ClassUID, ev.CategoryUID, ev.TypeUID)
		}
		if ev.Time != 1772357401000 || ev.Metadata.Version != "1.6.0" || ev.Metadata.Sequence != 7 || ev.Metadata.EventCode != string(kind) {
			t.Errorf("%s: time %d, metadata %+v", kind, ev.Time, ev.Metadata)
		}
		if ev.StatusDetail != "why" || ev.Actor.User.UID != "agent-1" || ev.SrcEndpoint.Name != "agent-1" {
			t.Errorf("%s: status_detail %q, actor %+v, src_endpoint %+v", kind, ev.StatusDetail, ev.Actor, ev.SrcEndpoint)
		}
		text, err := json.Marshal(ev)
		if err != nil {
			t.Fatal(err)
		}
		var doc map[string]any
		if err := json.Unmarshal(text, &doc); err != nil {
			t.Fatal(err)
		}
		for _, path := range required {
			if !has(doc, path) {
				t.Errorf("%s: the event lacks %v: %s", kind, path, text)
			}
		}
		var back audit.Entry
		if err := json.Unmarshal(ev.Unmapped.Countersign.Entry, &back); err != nil || back.Seq != 7 || back.Hash != "ab12" {
			t.Errorf("%s: unmapped.countersign.entry is not the entry: %s (%v)", kind, ev.Unmapped.Countersign.Entry, err)
		}
	}
}

// TestOCSFActorAndAPI pins who acts and what is called: the approver of
// a decision, the agent of a call, the tool as the operation and the
// request as api.request.uid.
func TestOCSFActorAndAPI(t *testing.T) {
	call, _ := feed.OCSF(audit.Entry{Kind: vocab.KindCallExecuted, Agent: "agent-1", Tool: "transfer", RequestID: "r-1"}, nil)
	if call.Actor.User != (feed.User{Name: "agent-1", UID: "agent-1", Type: "agent"}) || call.API.Operation != "transfer" ||
		call.API.Service.Name != "countersign/call.executed" || call.API.Request == nil || call.API.Request.UID != "r-1" {
		t.Errorf("call: actor %+v, api %+v", call.Actor, call.API)
	}
	if call.Unmapped.Countersign.Checkpoint != nil {
		t.Errorf("a checkpoint where none was given: %+v", call.Unmapped.Countersign.Checkpoint)
	}
	dec, _ := feed.OCSF(audit.Entry{Kind: vocab.KindApprovalDenied, Agent: "agent-1", Approver: "alice"}, nil)
	if dec.Actor.User != (feed.User{Name: "alice", UID: "alice", Type: "approver"}) || dec.API.Operation != "approval.denied" {
		t.Errorf("decision: actor %+v, api %+v", dec.Actor, dec.API)
	}
	sys, _ := feed.OCSF(audit.Entry{Kind: vocab.KindPolicyLoaded}, nil)
	if sys.Actor.User.Type != "system" || sys.SrcEndpoint.Name != "countersign" {
		t.Errorf("policy.loaded: actor %+v, src_endpoint %+v", sys.Actor, sys.SrcEndpoint)
	}
}

func has(doc map[string]any, path []string) bool {
	v, ok := doc[path[0]]
	if !ok || v == nil {
		return false
	}
	if len(path) == 1 {
		return true
	}
	m, ok := v.(map[string]any)
	return ok && has(m, path[1:])
}

// TestREADMESaysTheMapping checks README's table of activity, status and
// severity by kind against the pins: every kind once, with its numbers.
func TestREADMESaysTheMapping(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(readme), "| kinds | activity_id | status_id | severity_id |")
	if !ok {
		t.Fatal("README has no table of the OCSF mapping")
	}
	said := map[vocab.Kind][3]int{}
	row := regexp.MustCompile("^\\| (.+) \\| (\\d+) [A-Za-z ]+\\| (\\d+) [A-Za-z ]+\\| (\\d+) [A-Za-z ]+\\|$")
	for _, line := range strings.Split(rest, "\n")[2:] {
		if !strings.HasPrefix(line, "|") {
			break
		}
		m := row.FindStringSubmatch(line)
		if m == nil {
			t.Fatalf("README row %q is not kinds | activity | status | severity", line)
		}
		var nums [3]int
		for i := range nums {
			nums[i], _ = strconv.Atoi(m[i+2])
		}
		for k := range strings.SplitSeq(m[1], ", ") {
			kind := vocab.Kind(strings.Trim(k, "`"))
			if _, dup := said[kind]; dup {
				t.Errorf("README lists %s twice", kind)
			}
			said[kind] = nums
		}
	}
	for kind, pin := range ocsfPins {
		if got, ok := said[kind]; !ok || got != pin {
			t.Errorf("README says %s is %v (listed: %v), the mapping %v", kind, got, ok, pin)
		}
	}
	if len(said) != len(ocsfPins) {
		t.Errorf("README lists %d kinds, the mapping has %d", len(said), len(ocsfPins))
	}
}
