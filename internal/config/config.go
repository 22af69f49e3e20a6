// Package config is Outpost's configuration: one YAML document, decoded
// strictly (an unknown or duplicate key is an error naming the file and the
// line), validated once at load, with durations, sizes, networks and TLS
// modes parsed into typed fields. The key names are part of the product's
// interface and are documented in docs/config.md.
//
// A Config is immutable once returned by Load or Parse; a new configuration
// is a new value (validate through the same path as apply).
package config

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"outpost/internal/tlspolicy"
)

// Config is the whole configuration.
type Config struct {
	Hostname     string                  `yaml:"hostname"`
	DataDir      string                  `yaml:"data_dir"`
	Listeners    []Listener              `yaml:"listeners"`
	DNS          DNS                     `yaml:"dns"`
	TLS          TLS                     `yaml:"tls"`
	Delivery     Delivery                `yaml:"delivery"`
	Destinations map[string]*Destination `yaml:"destinations"`
	Bounce       Bounce                  `yaml:"bounce"`
	MTASTS       MTASTS                  `yaml:"mta_sts"`
	Logs         Logs                    `yaml:"logs"`
	Metrics      Metrics                 `yaml:"metrics"`
	Control      Control                 `yaml:"control"`

	// Source is the file the configuration came from ("" for defaults).
	Source string `yaml:"-"`
	// Warnings are non-fatal findings of validation (config check prints them).
	Warnings []string `yaml:"-"`
}

// Listener is one receiving SMTP address.
type Listener struct {
	Address        string   `yaml:"address"`
	Name           string   `yaml:"name"`
	RelayFrom      []string `yaml:"relay_from"`
	TLS            *Cert    `yaml:"tls"`
	MaxMessageSize Size     `yaml:"max_message_size"`
	MaxRecipients  int      `yaml:"max_recipients"`
	IdleTimeout    Duration `yaml:"idle_timeout"`
	SessionTimeout Duration `yaml:"session_timeout"`

	// Networks is RelayFrom parsed.
	Networks []netip.Prefix `yaml:"-"`
}

// Cert names a certificate chain and its key (PEM files).
type Cert struct {
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
}

// DNS configures the resolver.
type DNS struct {
	Resolvers []string `yaml:"resolvers"`
	Timeout   Duration `yaml:"timeout"`
}

// TLS configures outbound certificate verification.
type TLS struct {
	CAFile      string `yaml:"ca_file"`
	SystemRoots *bool  `yaml:"system_roots"`
	// ClientCert is presented on outbound TLS connections (destconfig SETUP).
	ClientCert *Cert `yaml:"client_cert"`
}

// UseSystemRoots reports whether the system trust store is used (default yes).
func (t TLS) UseSystemRoots() bool { return t.SystemRoots == nil || *t.SystemRoots }

// Delivery configures the delivery client and the scheduler.
type Delivery struct {
	Port           int      `yaml:"port"`
	ConnectTimeout Duration `yaml:"connect_timeout"`
	// MaxActive bounds the messages held in the active queue at once.
	MaxActive int `yaml:"max_active"`
	// MaxConnections bounds outbound connections across all destinations.
	MaxConnections int `yaml:"max_connections"`
}

// Destination is a Destination Control profile; nil fields inherit from
// the default profile.
type Destination struct {
	TLS                      *TLSMode `yaml:"tls"`
	MTASTS                   *bool    `yaml:"mta_sts"`
	MaxConcurrency           *int     `yaml:"max_concurrency"`
	MaxMessagesPerConnection *int     `yaml:"max_messages_per_connection"`
}

// Bounce is the retry schedule and bounce settings (the default bounce profile).
type Bounce struct {
	MaxRetries       int      `yaml:"max_retries"`
	MaxQueueLifetime Duration `yaml:"max_queue_lifetime"`
	InitialRetry     Duration `yaml:"initial_retry"`
	MaxRetryInterval Duration `yaml:"max_retry_interval"`
	SendBounces      *bool    `yaml:"send_bounces"`
	MaxBounceCopy    Size     `yaml:"max_bounce_copy"`
}

// MTASTS holds the global MTA-STS settings.
type MTASTS struct {
	FetchTimeout Duration `yaml:"fetch_timeout"`
	Proxy        string   `yaml:"proxy"`
	Refresh      *bool    `yaml:"refresh"`
}

// Logs configures the mail log.
type Logs struct {
	Level       string   `yaml:"level"`
	MaxSize     Size     `yaml:"max_size"`
	MaxAge      Duration `yaml:"max_age"`
	Keep        int      `yaml:"keep"`
	Syslog      bool     `yaml:"syslog"`
	MinFreeDisk Size     `yaml:"min_free_disk"`
}

// Metrics configures the Prometheus endpoint ("" address: off).
type Metrics struct {
	Address string `yaml:"address"`
}

// Control configures the control socket used by the CLI.
type Control struct {
	Socket string `yaml:"socket"`
}

// Profile is a destination's effective settings after inheritance.
type Profile struct {
	Name                     string // the entry that matched ("default", "example.com", ".example.com")
	TLS                      tlspolicy.Mode
	MTASTS                   bool
	MaxConcurrency           int
	MaxMessagesPerConnection int
}

// Defaults used when a key is absent.
const (
	DefaultListen         = "127.0.0.1:2525"
	DefaultDataDir        = "./outpost-data"
	DefaultMaxMessageSize = 35 << 20
	DefaultMaxRecipients  = 1000
	DefaultConcurrency    = 500
	DefaultMsgsPerConn    = 50
)

// Default returns the embedded default configuration.
func Default() *Config {
	c, err := Parse(nil, "")
	if err != nil {
		panic(err)
	}
	return c
}

// Load reads and validates a configuration file.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	return Parse(data, path)
}

// Parse decodes and validates YAML; name is used in error messages.
func Parse(data []byte, name string) (*Config, error) {
	c := &Config{Source: name}
	if len(bytes.TrimSpace(data)) > 0 {
		dec := yaml.NewDecoder(bytes.NewReader(data))
		dec.KnownFields(true)
		if err := dec.Decode(c); err != nil {
			return nil, fmt.Errorf("%s: %s", displayName(name), cleanYAMLError(err))
		}
		var extra yaml.Node
		if err := dec.Decode(&extra); err == nil {
			return nil, fmt.Errorf("%s: more than one YAML document", displayName(name))
		}
	}
	c.Source = name
	if err := c.finish(); err != nil {
		return nil, fmt.Errorf("%s: %w", displayName(name), err)
	}
	return c, nil
}

func displayName(n string) string {
	if n == "" {
		return "embedded defaults"
	}
	return n
}

var notFoundRE = regexp.MustCompile(`field (\S+) not found in type config\.\w+`)

func cleanYAMLError(err error) string {
	s := notFoundRE.ReplaceAllString(err.Error(), `unknown key "$1"`)
	s = strings.TrimPrefix(s, "yaml: ")
	s = strings.ReplaceAll(s, "unmarshal errors:\n  ", "")
	s = strings.ReplaceAll(s, "\n  ", "; ")
	return s
}

func (c *Config) finish() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if c.Hostname == "" {
		h, err := os.Hostname()
		if err != nil || h == "" {
			h = "localhost"
		}
		c.Hostname = h
	}
	if c.DataDir == "" {
		c.DataDir = DefaultDataDir
	}
	if len(c.Listeners) == 0 {
		c.Listeners = []Listener{{Address: DefaultListen, RelayFrom: []string{"127.0.0.0/8", "::1/128"}}}
	}
	for i := range c.Listeners {
		l := &c.Listeners[i]
		if _, _, err := net.SplitHostPort(l.Address); err != nil {
			bad("listeners[%d].address %q: want host:port", i, l.Address)
		}
		if l.Name == "" {
			l.Name = fmt.Sprintf("Listener%d", i+1)
		}
		for _, r := range l.RelayFrom {
			p, err := parsePrefix(r)
			if err != nil {
				bad("listeners[%d].relay_from %q: %v", i, r, err)
				continue
			}
			l.Networks = append(l.Networks, p)
		}
		if l.TLS != nil && (l.TLS.CertFile == "" || l.TLS.KeyFile == "") {
			bad("listeners[%d].tls: cert_file and key_file are both required", i)
		}
		if l.MaxMessageSize == 0 {
			l.MaxMessageSize = DefaultMaxMessageSize
		}
		if l.MaxRecipients == 0 {
			l.MaxRecipients = DefaultMaxRecipients
		} else if l.MaxRecipients < 100 {
			bad("listeners[%d].max_recipients %d: RFC 5321 §4.5.3.1.8 requires at least 100", i, l.MaxRecipients)
		}
		if l.IdleTimeout == 0 {
			l.IdleTimeout = Duration(5 * time.Minute)
		}
		if l.SessionTimeout == 0 {
			l.SessionTimeout = Duration(30 * time.Minute)
		}
	}
	if len(c.DNS.Resolvers) == 0 {
		c.DNS.Resolvers = resolvConf("/etc/resolv.conf")
	}
	for i, r := range c.DNS.Resolvers {
		if _, _, err := net.SplitHostPort(r); err != nil {
			if _, err2 := netip.ParseAddr(r); err2 != nil {
				bad("dns.resolvers[%d] %q: want an IP address or ip:port", i, r)
				continue
			}
			c.DNS.Resolvers[i] = net.JoinHostPort(r, "53")
		}
	}
	if c.DNS.Timeout == 0 {
		c.DNS.Timeout = Duration(5 * time.Second)
	}
	if c.Delivery.Port == 0 {
		c.Delivery.Port = 25
	} else if c.Delivery.Port < 1 || c.Delivery.Port > 65535 {
		bad("delivery.port %d: want 1-65535", c.Delivery.Port)
	}
	if c.Delivery.ConnectTimeout == 0 {
		c.Delivery.ConnectTimeout = Duration(30 * time.Second)
	}
	if c.Delivery.MaxActive == 0 {
		c.Delivery.MaxActive = 20000
	}
	if c.Delivery.MaxConnections == 0 {
		c.Delivery.MaxConnections = 10000
	}
	if c.TLS.ClientCert != nil && (c.TLS.ClientCert.CertFile == "" || c.TLS.ClientCert.KeyFile == "") {
		bad("tls.client_cert: cert_file and key_file are both required")
	}
	if !c.TLS.UseSystemRoots() && c.TLS.CAFile == "" {
		c.Warnings = append(c.Warnings, "tls.system_roots is false and no tls.ca_file is set: no certificate can be verified")
	}
	// Destination Controls.
	if c.Destinations == nil {
		c.Destinations = map[string]*Destination{}
	}
	def := c.Destinations["default"]
	if def == nil {
		def = &Destination{}
		c.Destinations["default"] = def
	}
	if def.TLS == nil {
		m := TLSMode(tlspolicy.Preferred)
		def.TLS = &m
	}
	if def.MTASTS == nil {
		f := false
		def.MTASTS = &f
	}
	if def.MaxConcurrency == nil {
		n := DefaultConcurrency
		def.MaxConcurrency = &n
	}
	if def.MaxMessagesPerConnection == nil {
		n := DefaultMsgsPerConn
		def.MaxMessagesPerConnection = &n
	}
	for _, name := range c.DestinationNames() {
		d := c.Destinations[name]
		if d == nil {
			bad("destinations.%s: empty entry (write {} to inherit everything)", name)
			continue
		}
		if name != "default" {
			if err := checkDestName(name); err != nil {
				bad("destinations.%s: %v", name, err)
			}
		}
		if d.MaxConcurrency != nil && (*d.MaxConcurrency < 1 || *d.MaxConcurrency > 1000) {
			bad("destinations.%s.max_concurrency %d: want 1-1000", name, *d.MaxConcurrency)
		}
		if d.MaxMessagesPerConnection != nil && (*d.MaxMessagesPerConnection < 1 || *d.MaxMessagesPerConnection > 1000) {
			bad("destinations.%s.max_messages_per_connection %d: want 1-1000", name, *d.MaxMessagesPerConnection)
		}
		p := c.profileFor(name)
		if p.MTASTS && p.TLS == tlspolicy.None {
			bad("destinations.%s: mta_sts: true needs TLS, but tls is none", name)
		}
	}
	if *def.MTASTS {
		c.Warnings = append(c.Warnings, "destinations.default.mta_sts is true: every destination domain costs MTA-STS lookups")
	}
	// Bounce profile (default).
	b := &c.Bounce
	if b.MaxRetries == 0 {
		b.MaxRetries = 100
	}
	if b.MaxQueueLifetime == 0 {
		b.MaxQueueLifetime = Duration(72 * time.Hour)
	}
	if b.InitialRetry == 0 {
		b.InitialRetry = Duration(60 * time.Second)
	}
	if b.MaxRetryInterval == 0 {
		b.MaxRetryInterval = Duration(3600 * time.Second)
	}
	if b.MaxRetryInterval < b.InitialRetry {
		bad("bounce.max_retry_interval %v is below bounce.initial_retry %v", b.MaxRetryInterval, b.InitialRetry)
	}
	if b.SendBounces == nil {
		t := true
		b.SendBounces = &t
	}
	if b.MaxBounceCopy == 0 {
		b.MaxBounceCopy = 10 << 10
	}
	// MTA-STS.
	if c.MTASTS.FetchTimeout == 0 {
		c.MTASTS.FetchTimeout = Duration(10 * time.Second)
	}
	if c.MTASTS.Refresh == nil {
		t := true
		c.MTASTS.Refresh = &t
	}
	if c.MTASTS.Proxy != "" && !strings.HasPrefix(c.MTASTS.Proxy, "http://") {
		bad("mta_sts.proxy %q: want http://host:port", c.MTASTS.Proxy)
	}
	// Logs.
	if c.Logs.Level == "" {
		c.Logs.Level = "info"
	}
	switch strings.ToLower(c.Logs.Level) {
	case "critical", "warning", "info", "information", "debug", "trace":
	default:
		bad("logs.level %q: want critical, warning, info, debug or trace", c.Logs.Level)
	}
	if c.Logs.MinFreeDisk == 0 {
		c.Logs.MinFreeDisk = 64 << 20
	}
	if c.Control.Socket == "" {
		c.Control.Socket = "control.sock" // relative to data_dir
	}
	return errors.Join(errs...)
}

func checkDestName(name string) error {
	n := strings.TrimPrefix(name, ".")
	if n == "" || strings.ContainsAny(n, " @/\\:") || strings.Contains(n, "..") {
		return errors.New("not a domain name (use example.com, or .example.com for its subdomains)")
	}
	return nil
}

func parsePrefix(s string) (netip.Prefix, error) {
	if p, err := netip.ParsePrefix(s); err == nil {
		return p.Masked(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, errors.New("want a network (10.0.0.0/8) or an address")
	}
	return netip.PrefixFrom(a, a.BitLen()), nil
}

func resolvConf(path string) []string {
	data, err := os.ReadFile(path)
	var out []string
	if err == nil {
		for _, line := range strings.Split(string(data), "\n") {
			f := strings.Fields(line)
			if len(f) >= 2 && f[0] == "nameserver" {
				if a, err := netip.ParseAddr(f[1]); err == nil {
					out = append(out, net.JoinHostPort(a.WithZone("").String(), "53"))
				}
			}
		}
	}
	if len(out) == 0 {
		out = []string{"127.0.0.1:53"}
	}
	return out
}

// DestinationNames lists the configured entries, "default" first, then sorted.
func (c *Config) DestinationNames() []string {
	names := make([]string, 0, len(c.Destinations))
	for n := range c.Destinations {
		if n != "default" {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	return append([]string{"default"}, names...)
}

// Profile returns the effective profile for a recipient domain: the exact
// entry, else the longest ".suffix" entry that matches, else the default;
// unset fields inherit from the default.
func (c *Config) Profile(domain string) Profile {
	domain = strings.ToLower(strings.TrimSuffix(domain, "."))
	if _, ok := c.Destinations[domain]; ok {
		return c.profileFor(domain)
	}
	for d := domain; ; {
		i := strings.IndexByte(d, '.')
		if i < 0 {
			break
		}
		if _, ok := c.Destinations[d[i:]]; ok {
			return c.profileFor(d[i:])
		}
		d = d[i+1:]
	}
	return c.profileFor("default")
}

func (c *Config) profileFor(name string) Profile {
	def := c.Destinations["default"]
	d := c.Destinations[name]
	p := Profile{Name: name, TLS: tlspolicy.Mode(*def.TLS), MTASTS: *def.MTASTS, MaxConcurrency: *def.MaxConcurrency, MaxMessagesPerConnection: *def.MaxMessagesPerConnection}
	if d == nil {
		return p
	}
	if d.TLS != nil {
		p.TLS = tlspolicy.Mode(*d.TLS)
	}
	if d.MTASTS != nil {
		p.MTASTS = *d.MTASTS
	}
	if d.MaxConcurrency != nil {
		p.MaxConcurrency = *d.MaxConcurrency
	}
	if d.MaxMessagesPerConnection != nil {
		p.MaxMessagesPerConnection = *d.MaxMessagesPerConnection
	}
	return p
}

// TLSMode is a Destination Control TLS mode as written in YAML.
type TLSMode tlspolicy.Mode

// UnmarshalYAML implements yaml.Unmarshaler, naming the line on error.
func (m *TLSMode) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return fmt.Errorf("line %d: want a TLS mode such as preferred or required-verify", n.Line)
	}
	v, err := tlspolicy.ParseMode(n.Value)
	if err != nil {
		return fmt.Errorf("line %d: %v", n.Line, err)
	}
	*m = TLSMode(v)
	return nil
}

// MarshalYAML implements yaml.Marshaler.
func (m TLSMode) MarshalYAML() (any, error) { return tlspolicy.Mode(m).String(), nil }

// Duration is a time.Duration written as "60s", "72h", or a number of seconds.
type Duration time.Duration

// D returns the time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

func (d Duration) String() string { return time.Duration(d).String() }

// UnmarshalYAML implements yaml.Unmarshaler.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return fmt.Errorf("line %d: want a duration such as 60s or 72h", n.Line)
	}
	if secs, err := strconv.ParseInt(n.Value, 10, 64); err == nil {
		*d = Duration(time.Duration(secs) * time.Second)
		return nil
	}
	v, err := time.ParseDuration(n.Value)
	if err != nil || v < 0 {
		return fmt.Errorf("line %d: %q is not a duration (want e.g. 60s, 5m, 72h)", n.Line, n.Value)
	}
	*d = Duration(v)
	return nil
}

// MarshalYAML implements yaml.Marshaler.
func (d Duration) MarshalYAML() (any, error) { return time.Duration(d).String(), nil }

// Size is a byte count written as 35MB, 10KB, 1GiB or a plain number.
type Size int64

// UnmarshalYAML implements yaml.Unmarshaler.
func (s *Size) UnmarshalYAML(n *yaml.Node) error {
	v, err := ParseSize(n.Value)
	if err != nil || n.Kind != yaml.ScalarNode {
		return fmt.Errorf("line %d: %q is not a size (want e.g. 35MB, 10KB, 1048576)", n.Line, n.Value)
	}
	*s = Size(v)
	return nil
}

// MarshalYAML implements yaml.Marshaler.
func (s Size) MarshalYAML() (any, error) { return int64(s), nil }

// ParseSize reads a size such as "35MB" as bytes. Mail administrators write
// 35MB and mean 35 × 2^20, as Postfix and the appliance do, so KB and KiB
// are both 1024, MB and MiB both 2^20.
func ParseSize(s string) (int64, error) {
	s = strings.TrimSpace(strings.ToUpper(s))
	mult := int64(1)
	for _, u := range []struct {
		suf string
		m   int64
	}{{"GIB", 1 << 30}, {"MIB", 1 << 20}, {"KIB", 1 << 10}, {"GB", 1 << 30}, {"MB", 1 << 20}, {"KB", 1 << 10}, {"G", 1 << 30}, {"M", 1 << 20}, {"K", 1 << 10}, {"B", 1}} {
		if strings.HasSuffix(s, u.suf) {
			s, mult = strings.TrimSpace(strings.TrimSuffix(s, u.suf)), u.m
			break
		}
	}
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil || v < 0 {
		return 0, fmt.Errorf("bad size %q", s)
	}
	return v * mult, nil
}
