package upstream

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"sync"
	"time"

	"github.com/countersign/countersign/config"
	"github.com/countersign/countersign/tools"
	sdk "github.com/modelcontextprotocol/go-sdk/mcp"
)

// conn is one upstream's connection and tools.
type conn struct {
	cfg    config.Upstream
	m      *Manager
	log    *slog.Logger
	getenv func(string) string
	relist chan struct{}

	mu       sync.Mutex
	session  *sdk.ClientSession // nil while down
	lastErr  error
	tools    int
	listing  []listedTool      // the last listing
	offered  map[string]string // tool -> hash of the pin its calls run under
	held     map[string]Change // tool -> how its listing differs from its pin
	progress sync.Map          // upstream progress token -> tools.Progress

	settleMu sync.Mutex // one settle at a time

	// A reload that removes or replaces the upstream retires it: its
	// keeping stops (stop), it touches the catalog no more, it takes no
	// new call, and it closes once the calls under way have their answers
	// (inflight, drained).
	stop     context.CancelFunc
	retired  bool
	inflight int
	drained  chan struct{}
}

// connect opens a session and lists the tools into the catalog.
func (c *conn) connect(ctx context.Context) error {
	session, err := c.dial(ctx)
	if err != nil {
		return err
	}
	if err := c.settle(ctx, true); err != nil {
		session.Close()
		c.setDown(err)
		return err
	}
	c.mu.Lock()
	if c.retired {
		// Reconnected while a reload retired it: nobody would close it.
		c.mu.Unlock()
		session.Close()
		return errors.New("retired by a reload")
	}
	c.session, c.lastErr = session, nil
	c.mu.Unlock()
	c.log.Info("upstream connected", "tools", c.offeredCount())
	return nil
}

// dial opens a session and reads the tool list (c.listing), touching
// neither the pins nor the catalog: a reload dials what it adds before it
// puts anything in force.
func (c *conn) dial(ctx context.Context) (*sdk.ClientSession, error) {
	client := sdk.NewClient(&sdk.Implementation{Name: "countersign", Version: c.m.version}, &sdk.ClientOptions{
		Logger: c.log,
		// A gateway has no roots of its own to offer; advertising the
		// capability would let an upstream such as the filesystem server
		// trade the directories it was started with for an empty list.
		Capabilities: &sdk.ClientCapabilities{},
		ToolListChangedHandler: func(context.Context, *sdk.ToolListChangedRequest) {
			select {
			case c.relist <- struct{}{}:
			default:
			}
		},
		ProgressNotificationHandler: func(_ context.Context, req *sdk.ProgressNotificationClientRequest) {
			if p, ok := c.progress.Load(req.Params.ProgressToken); ok {
				p.(tools.Progress)(req.Params.Progress, req.Params.Total, req.Params.Message)
			}
		},
	})
	session, err := c.open(ctx, client)
	if err != nil {
		c.setDown(err)
		return nil, err
	}
	if err := c.fetch(ctx, session); err != nil {
		session.Close()
		c.setDown(err)
		return nil, err
	}
	return session, nil
}

func (c *conn) open(ctx context.Context, client *sdk.Client) (*sdk.ClientSession, error) {
	if len(c.cfg.Command) > 0 {
		cmd := exec.Command(c.cfg.Command[0], c.cfg.Command[1:]...)
		cmd.Dir = c.cfg.Dir
		cmd.Env = c.environ()
		cmd.Stderr = &lineLog{log: c.log}
		return client.Connect(ctx, &sdk.CommandTransport{Command: cmd, TerminateDuration: 2 * time.Second}, nil)
	}
	wh, err := newWithHeaders(c.cfg.Name, c.cfg.URL, c.headers(), http.DefaultTransport)
	if err != nil {
		return nil, err
	}
	hc := &http.Client{Transport: wh, CheckRedirect: wh.checkRedirect}
	session, err := client.Connect(ctx, &sdk.StreamableClientTransport{Endpoint: c.cfg.URL, HTTPClient: hc, MaxRetries: -1}, nil)
	if err == nil {
		return session, nil
	}
	err = wh.explain(err)
	if ctx.Err() != nil {
		return nil, err
	}
	session, sseErr := client.Connect(ctx, &sdk.SSEClientTransport{Endpoint: c.cfg.URL, HTTPClient: hc}, nil)
	if sseErr != nil {
		sseErr = wh.explain(sseErr)
		return nil, fmt.Errorf("streamable HTTP: %v; SSE: %v", err, sseErr)
	}
	return session, nil
}

// environ is the upstream's whole environment: a few variables programs
// need to run (npx needs PATH and HOME), plus what the config gives it.
// Countersign's own environment is not passed on, since it may hold secrets
// meant for other upstreams.
func (c *conn) environ() []string {
	var env []string
	for _, k := range []string{"PATH", "HOME", "USER", "LANG", "TMPDIR", "SYSTEMROOT"} {
		if v, ok := os.LookupEnv(k); ok {
			if _, set := c.cfg.Env[k]; !set {
				env = append(env, k+"="+v)
			}
		}
	}
	for k, v := range c.cfg.Env {
		env = append(env, k+"="+os.Expand(v, c.getenv))
	}
	return env
}

func (c *conn) headers() http.Header {
	h := http.Header{}
	for k, v := range c.cfg.Headers {
		h.Set(k, os.Expand(v, c.getenv))
	}
	return h
}

// keep holds the connection until life ends: it re-lists on
// list_changed, and reconnects with capped exponential backoff when the
// upstream goes away.
func (c *conn) keep(life context.Context) {
	backoff := minBackoff
	for life.Err() == nil {
		c.mu.Lock()
		session := c.session
		c.mu.Unlock()
		if session == nil {
			select {
			case <-life.Done():
				return
			case <-time.After(backoff):
			}
			ctx, cancel := context.WithTimeout(life, c.cfg.ConnectTimeout)
			err := c.connect(ctx)
			cancel()
			if err != nil {
				c.log.Warn("upstream still unreachable", "err", err, "retry_in", min(2*backoff, maxBackoff))
				backoff = min(2*backoff, maxBackoff)
				continue
			}
			backoff = minBackoff
			continue
		}
		closed := make(chan error, 1)
		go func() { closed <- session.Wait() }()
		recheck := time.NewTicker(c.m.recheck)
	watch:
		for {
			select {
			case <-life.Done():
				recheck.Stop()
				return
			case <-recheck.C:
				if c.hasHeld() {
					if err := c.settle(life, false); err != nil {
						c.log.Error("reading the pins of held tools failed", "err", err)
					}
				}
			case <-c.relist:
				ctx, cancel := context.WithTimeout(life, c.cfg.ConnectTimeout)
				if err := c.list(ctx, session); err != nil {
					c.log.Error("re-listing tools after list_changed failed", "err", err)
				} else {
					c.log.Info("upstream tools changed", "tools", c.offeredCount())
				}
				cancel()
			case err := <-closed:
				if err == nil {
					err = errors.New("connection closed")
				}
				c.log.Error("upstream went away; reconnecting", "err", err)
				session.Close()
				c.setDown(err)
				recheck.Stop()
				break watch
			}
		}
	}
}

func (c *conn) setDown(err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.session, c.lastErr = nil, err
}

func (c *conn) close() {
	c.mu.Lock()
	session := c.session
	c.session = nil
	c.mu.Unlock()
	if session != nil {
		session.Close()
	}
}

// retire stops keeping the upstream and keeps it from the catalog and from
// new calls; it closes it once the calls under way have their answers,
// or at once when the Manager closes.
func (c *conn) retire() {
	if c.stop != nil {
		c.stop()
	}
	c.settleMu.Lock() // a settle under way publishes before this, none after
	c.mu.Lock()
	c.retired = true
	drained := make(chan struct{})
	if c.inflight == 0 {
		close(drained)
	} else {
		c.drained = drained
	}
	c.mu.Unlock()
	c.settleMu.Unlock()
	c.m.draining.Add(1)
	go func() {
		defer c.m.draining.Done()
		select {
		case <-drained:
		case <-c.m.life.Done():
		}
		c.close()
		c.log.Info("upstream stopped: a reload removed or replaced it")
	}()
}

// begin counts a call in, unless the upstream is retired.
func (c *conn) begin() (*sdk.ClientSession, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.retired {
		return nil, &tools.NotSentError{Err: fmt.Errorf("upstream %s was removed or replaced by a configuration reload: call the tool again (list the tools to see what is offered now)", c.cfg.Name)}
	}
	if c.session == nil {
		lastErr := c.lastErr
		if lastErr == nil {
			lastErr = errors.New("not connected")
		}
		return nil, &tools.NotSentError{Err: fmt.Errorf("upstream %s is unavailable (reconnecting): %v", c.cfg.Name, lastErr)}
	}
	c.inflight++
	return c.session, nil
}

// end counts a call out.
func (c *conn) end() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.inflight--
	if c.inflight == 0 && c.drained != nil {
		close(c.drained)
		c.drained = nil
	}
}
