package config

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/countersign/countersign"
)

// DefaultDataDir is where Countersign keeps its database and signing key
// when server.data_dir is not set: $XDG_STATE_HOME/countersign, else
// ~/.local/state/countersign (the XDG base directory for state that
// persists across restarts but is not configuration).
func DefaultDataDir() (string, error) {
	// The XDG spec says a relative value is invalid and must be ignored.
	if dir := os.Getenv("XDG_STATE_HOME"); dir != "" && filepath.IsAbs(dir) {
		return filepath.Join(dir, "countersign"), nil
	}
	home, err := os.UserHomeDir()
	if err != nil || home == "" {
		return "", errors.New("no default: neither XDG_STATE_HOME nor HOME is set; set server.data_dir")
	}
	return filepath.Join(home, ".local", "state", "countersign"), nil
}

// pathSetting is one setting that names a file or directory.
type pathSetting struct {
	key string  // config key path, e.g. deploy.command[0]
	env string  // the key whose environment variable can set it
	p   *string // the value, resolved in place
	// program is set for argv[0]: a bare name (no slash) is looked up in
	// PATH when run, so it is not a path relative to anything.
	program bool
}

func (c *Config) pathSettings() []pathSetting {
	ps := []pathSetting{
		{key: "server.data_dir", env: "server.data_dir", p: &c.Server.DataDir},
		{key: "secrets.dir", env: "secrets.dir", p: &c.Secrets.Dir},
		{key: "approval.tls_cert_file", env: "approval.tls_cert_file", p: &c.Approval.TLSCertFile},
		{key: "approval.tls_key_file", env: "approval.tls_key_file", p: &c.Approval.TLSKeyFile},
		{key: "audit.key_file", env: "audit.key_file", p: &c.Audit.KeyFile},
	}
	for i := range c.Approval.AttestationRoots {
		ps = append(ps, pathSetting{key: fmt.Sprintf("approval.attestation_roots[%d]", i), p: &c.Approval.AttestationRoots[i]})
	}
	if len(c.Deploy.Command) > 0 {
		ps = append(ps, pathSetting{key: "deploy.command[0]", env: "deploy.command", p: &c.Deploy.Command[0], program: true})
	}
	for i := range c.Upstreams {
		u := &c.Upstreams[i]
		p := fmt.Sprintf("upstreams[%d]", i)
		ps = append(ps, pathSetting{key: p + ".dir", p: &u.Dir})
		if len(u.Command) > 0 {
			ps = append(ps, pathSetting{key: p + ".command[0]", p: &u.Command[0], program: true})
		}
	}
	return ps
}

// resolvePaths makes every relative path absolute and sets c.Dir: a value
// from the file against base (the file's directory), a value from an
// environment variable against the working directory, as a shell user
// would expect. With base "" (the embedded default, which has no file)
// paths resolve against the data directory. A leading ~/ is the home
// directory. Programs named without a slash stay bare, for PATH.
func (c *Config) resolvePaths(base string) {
	cwd, _ := os.Getwd()
	settings := c.pathSettings() // the data directory first
	if base == "" {
		resolve(settings[0], cwd, cwd)
		base = c.Server.DataDir
	}
	c.Dir = base
	for _, s := range settings {
		resolve(s, base, cwd)
	}
}

func resolve(s pathSetting, base, cwd string) {
	v := *s.p
	if v == "" || (s.program && !strings.ContainsRune(v, '/')) {
		return
	}
	if rest, ok := strings.CutPrefix(v, "~/"); ok {
		if home, err := os.UserHomeDir(); err == nil {
			v = filepath.Join(home, rest)
		}
	}
	if !filepath.IsAbs(v) {
		dir := base
		if _, fromEnv := envVar(s.env); fromEnv {
			dir = cwd
		}
		v = filepath.Join(dir, v)
	}
	*s.p = filepath.Clean(v)
}

// checkPaths checks what serve will open at start: the data directory can
// be created, the deploy and upstream programs exist and are executable,
// the secrets directory is a readable directory, the TLS pair loads, and
// the listen addresses are on this machine. Files the binary writes into
// the data directory on first start (the embedded default's demo files)
// count as present.
func (c *Config) checkPaths(v *validator) {
	c.checkDataDir(v)
	if _, ok := c.Tools["deploy"]; ok && len(c.Deploy.Command) > 0 && c.Deploy.Command[0] != "" {
		c.checkProgram(v, "deploy.command[0]", c.Deploy.Command[0])
	}
	_, readSecret := c.Tools["read_secret"]
	_, listSecrets := c.Tools["list_secrets"]
	if (readSecret || listSecrets) && c.Secrets.Dir != "" && !c.provided(c.Secrets.Dir) {
		checkDir(v, "secrets.dir", c.Secrets.Dir, true)
	}
	if a := c.Approval; a.TLSCertFile != "" && a.TLSKeyFile != "" {
		if _, err := tls.LoadX509KeyPair(a.TLSCertFile, a.TLSKeyFile); err != nil {
			v.fail("approval.tls_cert_file", "cannot load the certificate and key: %v", err)
		}
	}
	for i, u := range c.Upstreams {
		p := fmt.Sprintf("upstreams[%d]", i)
		if len(u.Command) > 0 && u.Command[0] != "" {
			c.checkProgram(v, p+".command[0]", u.Command[0])
		}
		if u.Dir != "" {
			checkDir(v, p+".dir", u.Dir, false)
		}
	}
	checkListen(v, "approval.listen", c.Approval.Listen)
	if c.HTTP.Addr != "" {
		checkListen(v, "http.addr", c.HTTP.Addr)
	}
}

// provided reports whether path is one of the demo files that serve
// writes into the data directory on first start; only the embedded
// default names them there.
func (c *Config) provided(path string) bool {
	if c.Source != Embedded || c.Dir == "" {
		return false
	}
	rel, err := filepath.Rel(c.Dir, path)
	if err != nil || !filepath.IsLocal(rel) {
		return false
	}
	_, err = fs.Stat(countersign.Demo, filepath.ToSlash(rel))
	return err == nil
}

func (c *Config) checkDataDir(v *validator) {
	dir := c.Server.DataDir
	if dir == "" {
		return // validate has said so
	}
	fi, err := os.Stat(dir)
	if err == nil {
		if !fi.IsDir() {
			v.fail("server.data_dir", "%s is not a directory", dir)
		} else if !accessible(dir, wOK|xOK) {
			v.fail("server.data_dir", "%s is not writable by this user", dir)
		}
		return
	}
	if !errors.Is(err, fs.ErrNotExist) && !errors.Is(err, syscall.ENOTDIR) {
		v.fail("server.data_dir", "%v", err)
		return
	}
	// It will be created: the nearest existing parent must let us.
	parent := filepath.Dir(filepath.Clean(dir))
	for {
		fi, err := os.Stat(parent)
		if err == nil {
			if !fi.IsDir() {
				v.fail("server.data_dir", "cannot create %s: %s is not a directory", dir, parent)
			} else if !accessible(parent, wOK|xOK) {
				v.fail("server.data_dir", "cannot create %s: %s is not writable by this user", dir, parent)
			}
			return
		}
		next := filepath.Dir(parent)
		if next == parent {
			return
		}
		parent = next
	}
}

func (c *Config) checkProgram(v *validator, key, prog string) {
	if !strings.ContainsRune(prog, '/') {
		if _, err := exec.LookPath(prog); err != nil {
			v.fail(key, "%q is not an executable program in PATH", prog)
		}
		return
	}
	if c.provided(prog) {
		return
	}
	fi, err := os.Stat(prog)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		v.fail(key, "%s does not exist", prog)
	case err != nil:
		v.fail(key, "%v", err)
	case !fi.Mode().IsRegular():
		v.fail(key, "%s is not a regular file", prog)
	case fi.Mode().Perm()&0o111 == 0 || !accessible(prog, xOK):
		v.fail(key, "%s is not executable (mode %v): chmod +x it", prog, fi.Mode().Perm())
	}
}

func checkDir(v *validator, key, dir string, read bool) {
	fi, err := os.Stat(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		v.fail(key, "%s does not exist", dir)
	case err != nil:
		v.fail(key, "%v", err)
	case !fi.IsDir():
		v.fail(key, "%s is not a directory", dir)
	case read && !accessible(dir, rOK|xOK):
		v.fail(key, "%s is not readable by this user", dir)
	}
}

// checkListen refuses an address serve could not listen on whatever else
// runs: a host name that does not resolve, or an IP address this machine
// does not have. A port in use is not checked: the server being validated
// may be the one using it.
func checkListen(v *validator, key, addr string) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil || isUnspecified(host) || strings.EqualFold(host, "localhost") {
		return // validate has said what is wrong with the form
	}
	ips := []net.IP{net.ParseIP(strings.Trim(host, "[]"))}
	if ips[0] == nil {
		addrs, err := net.LookupIP(host)
		if err != nil {
			v.fail(key, "host %q does not resolve: %v", host, err)
			return
		}
		ips = addrs
	}
	local, err := net.InterfaceAddrs()
	if err != nil {
		return
	}
	for _, ip := range ips {
		if ip.IsLoopback() {
			return
		}
		for _, a := range local {
			if n, ok := a.(*net.IPNet); ok && n.IP.Equal(ip) {
				return
			}
		}
	}
	v.fail(key, "%s is not an address of this machine", host)
}

const (
	xOK = 1
	wOK = 2
	rOK = 4
)

// accessible asks the kernel whether this process may use path so, which
// mode bits alone cannot say (ownership, ACLs, read-only mounts).
func accessible(path string, mode uint32) bool {
	return syscall.Access(path, mode) == nil
}
