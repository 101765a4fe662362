package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"time"

	sdk "github.com/modelcontextprotocol/go-sdk/mcp"
)

// countersign runs `countersign serve` on its embedded default with its own
// data directory and a free approver port.
func countersign(bin, dir, addr string, env []string) *exec.Cmd {
	args := []string{"serve"}
	if addr != "" {
		args = append(args, "--http", addr)
	}
	cmd := exec.Command(bin, args...)
	cmd.Env = append(countersignEnv(dir, freeAddr()), env...)
	return cmd
}

// countersignEnv points Countersign at dir, with its approver page on
// page (host:port), shown as localhost as WebAuthn wants.
func countersignEnv(dir, page string) []string {
	_, port, _ := net.SplitHostPort(page)
	return append(os.Environ(),
		"COUNTERSIGN_SERVER_DATA_DIR="+dir,
		"COUNTERSIGN_SERVER_LOG_LEVEL=warn",
		"COUNTERSIGN_APPROVAL_LISTEN="+page,
		"COUNTERSIGN_APPROVAL_PUBLIC_URL=http://localhost:"+port,
		// The per-agent caps protect against a runaway agent; here one
		// agent is the load on purpose.
		"COUNTERSIGN_LIMITS_CALLS_PER_SECOND=1000000",
		"COUNTERSIGN_LIMITS_CALL_BURST=1000000",
		"COUNTERSIGN_LIMITS_PENDING_PER_AGENT=100000",
		"COUNTERSIGN_LIMITS_PENDING_TOTAL=100000",
	)
}

// server is one process under test with a first client session.
type server struct {
	session  *sdk.ClientSession
	endpoint string
	cmd      *exec.Cmd
	extra    []*sdk.ClientSession
}

func (s *server) sessions(ctx context.Context, n int) ([]*sdk.ClientSession, error) {
	for len(s.extra) < n {
		cs, err := dial(ctx, s.endpoint)
		if err != nil {
			return nil, err
		}
		s.extra = append(s.extra, cs)
	}
	return s.extra[:n], nil
}

func (s *server) stop() {
	for _, cs := range s.extra {
		cs.Close()
	}
	if s.session != nil {
		s.session.Close()
	}
	if s.cmd != nil && s.cmd.Process != nil {
		s.cmd.Process.Signal(os.Interrupt)
		done := make(chan struct{})
		go func() { s.cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			s.cmd.Process.Kill()
		}
	}
}

func client() *sdk.Client {
	return sdk.NewClient(&sdk.Implementation{Name: "csbench", Version: "1"}, nil)
}

func dial(ctx context.Context, endpoint string) (*sdk.ClientSession, error) {
	return client().Connect(ctx, &sdk.StreamableClientTransport{Endpoint: endpoint, MaxRetries: -1}, nil)
}

func startHTTP(ctx context.Context, work string, mk func(dir, addr string) *exec.Cmd) (*server, error) {
	dir, err := os.MkdirTemp(work, "data")
	if err != nil {
		return nil, err
	}
	addr := freeAddr()
	cmd := mk(dir, addr)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	s := &server{cmd: cmd, endpoint: "http://" + addr + "/mcp"}
	deadline := time.Now().Add(30 * time.Second)
	for {
		cs, err := dial(ctx, s.endpoint)
		if err == nil {
			s.session = cs
			return s, nil
		}
		if time.Now().After(deadline) {
			s.stop()
			return nil, fmt.Errorf("not serving after 30s: %w", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func startStdio(ctx context.Context, work string, mk func(dir, addr string) *exec.Cmd) (*server, error) {
	dir, err := os.MkdirTemp(work, "data")
	if err != nil {
		return nil, err
	}
	cmd := mk(dir, "")
	cmd.Stderr = os.Stderr
	cs, err := client().Connect(ctx, &sdk.CommandTransport{Command: cmd}, nil)
	if err != nil {
		return nil, err
	}
	return &server{session: cs}, nil
}

func freeAddr() string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}
