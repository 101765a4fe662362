// Package feed hands the audit log to a security team's SIEM: each entry
// as an OCSF API Activity event (OCSF), for `audit tail --format ocsf`,
// and as OpenTelemetry log records POSTed to an OTLP/HTTP endpoint
// (Exporter), from a position stored in the database so that a restart
// resumes where delivery stopped.
package feed

import (
	"encoding/json"
	"time"

	"github.com/countersign/countersign/audit"
	"github.com/countersign/countersign/vocab"
)

// OCSFVersion is the OCSF schema version the events claim (metadata.version).
const OCSFVersion = "1.6.0"

// The OCSF API Activity class (category Application Activity).
const (
	classAPIActivity    = 6003
	categoryApplication = 6
)

// OCSF activity, status and severity ids used here (OCSF 1.6.0 enums).
const (
	activityCreate = 1
	activityUpdate = 3
	activityDelete = 4
	activityOther  = 99

	statusUnknown = 0
	statusSuccess = 1
	statusFailure = 2

	severityInformational = 1
	severityMedium        = 3
	severityHigh          = 4
)

// kindMapping is how one entry kind reads in OCSF.
type kindMapping struct{ activity, status, severity int }

// kindMappings maps every entry kind; a kind missing here maps as
// Other/Unknown/Informational (TestOCSFMapsEveryKind keeps it complete).
var kindMappings = map[vocab.Kind]kindMapping{
	vocab.KindCallAllowed:       {activityOther, statusSuccess, severityInformational},
	vocab.KindCallDenied:        {activityOther, statusFailure, severityMedium},
	vocab.KindCallRejected:      {activityOther, statusFailure, severityMedium},
	vocab.KindCallRateLimited:   {activityOther, statusFailure, severityMedium},
	vocab.KindCallExecuted:      {activityOther, statusSuccess, severityInformational},
	vocab.KindCallFailed:        {activityOther, statusFailure, severityInformational},
	vocab.KindCallInterrupted:   {activityOther, statusUnknown, severityHigh},
	vocab.KindCallReconciled:    {activityUpdate, statusSuccess, severityInformational},
	vocab.KindApprovalRequested: {activityCreate, statusSuccess, severityInformational},
	vocab.KindApprovalAssertion: {activityOther, statusSuccess, severityInformational},
	vocab.KindApprovalApproved:  {activityUpdate, statusSuccess, severityInformational},
	vocab.KindApprovalDenied:    {activityUpdate, statusFailure, severityMedium},
	vocab.KindApprovalExpired:   {activityUpdate, statusFailure, severityInformational},
	vocab.KindApprovalCancelled: {activityUpdate, statusFailure, severityInformational},
	vocab.KindApprovalRejected:  {activityOther, statusFailure, severityHigh},
	vocab.KindApproverEnrolled:  {activityCreate, statusSuccess, severityMedium},
	vocab.KindCredentialRevoked: {activityDelete, statusSuccess, severityMedium},
	vocab.KindEnrollmentCreated: {activityCreate, statusSuccess, severityMedium},
	vocab.KindPolicyLoaded:      {activityUpdate, statusSuccess, severityMedium},
	vocab.KindNotifySent:        {activityOther, statusSuccess, severityInformational},
	vocab.KindGrantRevoked:      {activityDelete, statusSuccess, severityMedium},
	vocab.KindAgentFrozen:       {activityUpdate, statusSuccess, severityHigh},
	vocab.KindAgentUnfrozen:     {activityUpdate, statusSuccess, severityMedium},
	vocab.KindApproverSuspended: {activityUpdate, statusSuccess, severityMedium},
	vocab.KindToolPinned:        {activityCreate, statusSuccess, severityInformational},
	vocab.KindToolChanged:       {activityUpdate, statusSuccess, severityHigh},
	vocab.KindToolAccepted:      {activityUpdate, statusSuccess, severityMedium},
	vocab.KindRollbackAccepted:  {activityOther, statusSuccess, severityHigh},
	vocab.KindAuditPruned:       {activityDelete, statusSuccess, severityMedium}, // entries left the database for a verified archive
	// The log's signing key changed: an integrity and configuration change.
	// It stays in class 6003 API Activity like every kind (one class for the
	// whole feed; OCSF's Device Config State Change, 5019, describes a
	// device, not an application's key), as an Update of High severity.
	vocab.KindKeyRotated: {activityUpdate, statusSuccess, severityHigh},
}

var activityNames = map[int]string{activityCreate: "Create", activityUpdate: "Update", activityDelete: "Delete", activityOther: "Other"}
var statusNames = map[int]string{statusUnknown: "Unknown", statusSuccess: "Success", statusFailure: "Failure"}
var severityNames = map[int]string{severityInformational: "Informational", severityMedium: "Medium", severityHigh: "High"}

// Event is one audit entry as an OCSF API Activity event. Members with
// no OCSF attribute (the entry's integrity: seq, hash, prev_hash, the
// checkpoint that covers it, and the entry itself) are under
// unmapped.countersign, so a SIEM keeps what an auditor needs to check
// the record against the log's signed checkpoint.
type Event struct {
	ClassUID     int      `json:"class_uid"`
	ClassName    string   `json:"class_name"`
	CategoryUID  int      `json:"category_uid"`
	CategoryName string   `json:"category_name"`
	ActivityID   int      `json:"activity_id"`
	ActivityName string   `json:"activity_name"`
	TypeUID      int      `json:"type_uid"`
	TypeName     string   `json:"type_name"`
	Time         int64    `json:"time"` // ms since the epoch
	SeverityID   int      `json:"severity_id"`
	Severity     string   `json:"severity"`
	StatusID     int      `json:"status_id"`
	Status       string   `json:"status"`
	StatusDetail string   `json:"status_detail,omitempty"`
	Metadata     Metadata `json:"metadata"`
	Actor        Actor    `json:"actor"`
	API          API      `json:"api"`
	SrcEndpoint  Endpoint `json:"src_endpoint"`
	Unmapped     Unmapped `json:"unmapped"`
}

// Metadata is OCSF's metadata object.
type Metadata struct {
	Version      string  `json:"version"`
	Product      Product `json:"product"`
	UID          string  `json:"uid"`        // the entry's hash: unique per log
	EventCode    string  `json:"event_code"` // the entry kind
	LogName      string  `json:"log_name"`
	Sequence     int64   `json:"sequence"` // the entry's seq
	OriginalTime string  `json:"original_time"`
}

// Product names Countersign.
type Product struct {
	Name       string `json:"name"`
	VendorName string `json:"vendor_name"`
}

// Actor is who acted: the agent of a call, the approver of a decision.
type Actor struct {
	User User `json:"user"`
}

// User is OCSF's user object.
type User struct {
	Name string `json:"name,omitempty"`
	UID  string `json:"uid,omitempty"`
	Type string `json:"type,omitempty"` // "agent" or "approver" (Countersign's words)
}

// API is what was called: a tool of the gateway, or the kind of event.
type API struct {
	Operation string   `json:"operation"`
	Service   Service  `json:"service"`
	Request   *Request `json:"request,omitempty"`
}

// Service is OCSF's service object.
type Service struct {
	Name string `json:"name"`
}

// Request is OCSF's request object: the approval request's id.
type Request struct {
	UID string `json:"uid"`
}

// Endpoint is OCSF's network endpoint; the log knows the agent, not its
// address.
type Endpoint struct {
	Name string `json:"name"`
}

// Unmapped holds what OCSF has no attribute for.
type Unmapped struct {
	Countersign Integrity `json:"countersign"`
}

// Integrity is the record-integrity part: enough to find the entry in an
// export and check it against the signed checkpoint.
type Integrity struct {
	Seq        int64           `json:"seq"`
	Hash       string          `json:"hash"`
	PrevHash   string          `json:"prev_hash"`
	Checkpoint *Checkpoint     `json:"checkpoint,omitempty"`
	Entry      json.RawMessage `json:"entry"`
}

// Checkpoint is the signed checkpoint that covers an entry (its size is
// at least the entry's seq): the note as the log signed it.
type Checkpoint struct {
	Size int64  `json:"size"`
	Note string `json:"note"`
}

// OCSF returns e as an OCSF event; cp, when not nil, is a checkpoint
// whose size is at least e.Seq.
func OCSF(e audit.Entry, cp *Checkpoint) (Event, error) {
	m, ok := kindMappings[e.Kind]
	if !ok {
		m = kindMapping{activityOther, statusUnknown, severityInformational}
	}
	raw, err := json.Marshal(e)
	if err != nil {
		return Event{}, err
	}
	var ms int64
	if t, err := time.Parse(time.RFC3339Nano, e.Time); err == nil {
		ms = t.UnixMilli()
	}
	ev := Event{
		ClassUID: classAPIActivity, ClassName: "API Activity",
		CategoryUID: categoryApplication, CategoryName: "Application Activity",
		ActivityID: m.activity, ActivityName: activityNames[m.activity],
		TypeUID: classAPIActivity*100 + m.activity, TypeName: "API Activity: " + activityNames[m.activity],
		Time:       ms,
		SeverityID: m.severity, Severity: severityNames[m.severity],
		StatusID: m.status, Status: statusNames[m.status],
		StatusDetail: e.Reason,
		Metadata: Metadata{
			Version: OCSFVersion, Product: Product{Name: "Countersign", VendorName: "Countersign"},
			UID: e.Hash, EventCode: string(e.Kind), LogName: "countersign-audit", Sequence: e.Seq, OriginalTime: e.Time,
		},
		Actor:       actor(e),
		API:         API{Operation: string(e.Kind), Service: Service{Name: "countersign"}},
		SrcEndpoint: Endpoint{Name: "countersign"},
		Unmapped:    Unmapped{Integrity{Seq: e.Seq, Hash: e.Hash, PrevHash: e.PrevHash, Checkpoint: cp, Entry: raw}},
	}
	if e.Tool != "" {
		ev.API.Operation = e.Tool
		ev.API.Service.Name = "countersign/" + string(e.Kind)
	}
	if e.RequestID != "" {
		ev.API.Request = &Request{UID: e.RequestID}
	}
	if e.Agent != "" {
		ev.SrcEndpoint.Name = e.Agent
	}
	return ev, nil
}

// actor is the approver of a decision, else the agent of a call.
func actor(e audit.Entry) Actor {
	if e.Approver != "" {
		return Actor{User{Name: e.Approver, UID: e.Approver, Type: "approver"}}
	}
	if e.Agent != "" {
		return Actor{User{Name: e.Agent, UID: e.Agent, Type: "agent"}}
	}
	return Actor{User{Name: "countersign", Type: "system"}}
}
