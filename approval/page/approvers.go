package page

import (
	"github.com/countersign/countersign/approval"
	"github.com/countersign/countersign/approval/ceremony"
)

// approverList is who may approve a request, split by whether they can
// now: only an approver with an enrolled, unrevoked key can tap, and
// listing the others as able to approve sends people to someone who
// cannot yet.
type approverList struct{ Now, Enroll []string }

// whoApproves splits r's approvers, by name, into those with a key
// (pageData.Holders, from server.holders) and those who must enroll one
// first. Without holders (none were read), all are listed as able.
func whoApproves(r *approval.Request, holders map[string]bool) approverList {
	var l approverList
	l.Now, l.Enroll = ceremony.Split(holders, r.Approvers, r.ApproverNames)
	return l
}
