package daemon

import (
	"context"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/countersign/countersign/approval"
	"github.com/countersign/countersign/audit"
	"github.com/countersign/countersign/config"
	"github.com/countersign/countersign/identity"
	"github.com/countersign/countersign/metrics"
	"github.com/countersign/countersign/notify"
	"github.com/countersign/countersign/vocab"
)

// notifier starts the notification channels of c and returns the observer
// approval.Options.Notify takes; both nil when none are configured.
// Secrets are expanded here, once, from the environment (config checked
// that each variable is set). Delivered notifications are recorded as one
// notify.sent entry per request and event.
func notifier(c *config.Config, rec metrics.Recorder, m *metrics.Metrics, people *identity.People, log *slog.Logger) (*notify.Notifier, func(string, *approval.Request)) {
	if len(c.Notify) == 0 {
		return nil, nil
	}
	var chans []notify.Channel
	for _, n := range c.Notify {
		chans = append(chans, notify.Channel{
			Type: n.Type, URL: n.URL, Secret: n.ExpandSecret(nil),
			For: slices.Clone(n.For), Events: slices.Clone(n.Events),
		})
	}
	roles := map[string][]string{}
	for _, a := range c.Approvers {
		roles[a.ID] = a.Roles
	}
	n := notify.New(notify.Options{
		Channels: chans,
		Logger:   log,
		Outcome:  m.Notified,
		Delivered: func(msg notify.Message, types []string) {
			if len(types) == 0 {
				return
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			_, err := rec.Append(ctx, audit.Entry{
				Kind: vocab.KindNotifySent, RequestID: msg.RequestID, Agent: msg.Agent, Tool: msg.Tool,
				Reason: msg.Event + " sent to " + strings.Join(types, ", "),
			})
			if err != nil {
				log.Warn("recording a sent notification", "request", msg.RequestID, "event", msg.Event, "err", err)
			}
		},
	})
	return n, func(event string, r *approval.Request) {
		msg := notify.Message{
			Event: event, RequestID: r.ID, Tool: r.Tool, Agent: r.Agent, Level: string(r.Level),
			Summary: r.Summary(), Code: r.Code, URL: r.URL, ExpiresAt: r.ExpiresAt,
			Approvers: slices.Clone(r.Approvers), DecidedBy: r.DecidedBy,
		}
		for _, a := range r.Approvers {
			held := roles[a]
			if k, ok := people.Lookup(a); ok { // a person of the identity provider
				held = k.Roles
			}
			for _, role := range held {
				if !slices.Contains(msg.Roles, role) {
					msg.Roles = append(msg.Roles, role)
				}
			}
		}
		n.Notify(msg)
	}
}
