package approval

import (
	"encoding/json"
	"fmt"
	"strings"

	"github.com/countersign/countersign/authzdetails"
)

// CheckShown renders what [Service.Create] would show the approver for a
// request of tool with these authorization details and arguments, and
// returns a *authzdetails.ShowLimitError when it could not show it all.
// The caller refuses such a call before raising a request; Create refuses
// it too.
func CheckShown(details, args json.RawMessage, tool, agent string) error {
	var list []json.RawMessage
	if len(details) > 0 {
		if err := json.Unmarshal(details, &list); err != nil {
			return fmt.Errorf("%w: authorization_details must be a JSON array: %v", ErrInvalidRequest, err)
		}
	}
	// A code has a fixed length, so the placeholder gives the same size.
	_, err := authzdetails.Render(list, args, tool, agent, strings.Repeat("X", codeLength))
	return err
}
