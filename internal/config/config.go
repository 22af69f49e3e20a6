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

	"outpost/internal/dane"
	"outpost/internal/tlspolicy"
)

// Config is the whole configuration.
type Config struct {
	Hostname     string                  `yaml:"hostname,omitempty"`
	DataDir      string                  `yaml:"data_dir,omitempty"`
	Listeners    []Listener              `yaml:"listeners,omitempty"`
	DNS          DNS                     `yaml:"dns,omitempty"`
	TLS          TLS                     `yaml:"tls,omitempty"`
	Delivery     Delivery                `yaml:"delivery,omitempty"`
	Destinations map[string]*Destination `yaml:"destinations,omitempty"`
	SMTPRoutes   map[string]*Route       `yaml:"smtp_routes,omitempty"`
	Bounce       Bounce                  `yaml:"bounce,omitempty"`
	// BounceProfiles are named bounce profiles; unset fields inherit from
	// Bounce, which is the "Default" profile.
	BounceProfiles     map[string]*Bounce         `yaml:"bounce_profiles,omitempty"`
	VirtualGateways    map[string]*VirtualGateway `yaml:"virtual_gateways,omitempty"`
	BounceVerification BounceVerification         `yaml:"bounce_verification,omitempty"`
	MTASTS             MTASTS                     `yaml:"mta_sts,omitempty"`
	Logs               Logs                       `yaml:"logs,omitempty"`
	Metrics            Metrics                    `yaml:"metrics,omitempty"`
	Control            Control                    `yaml:"control,omitempty"`
	// WebUI is the administration web interface; nil (no webui: key): off.
	WebUI *WebUI `yaml:"webui,omitempty"`
	// User, when set and Outpost starts as root, is the user serve
	// switches to once its listeners are bound (docs/hardening.md).
	User string `yaml:"user,omitempty"`

	// Source is the file the configuration came from ("" for defaults).
	Source string `yaml:"-"`
	// Warnings are non-fatal findings of validation (config check prints them).
	Warnings []string `yaml:"-"`
}

// Listener is one receiving SMTP address.
type Listener struct {
	Address        string   `yaml:"address,omitempty"`
	Name           string   `yaml:"name,omitempty"`
	RelayFrom      []string `yaml:"relay_from,omitempty"`
	TLS            *Cert    `yaml:"tls,omitempty"`
	MaxMessageSize Size     `yaml:"max_message_size,omitempty"`
	MaxRecipients  int      `yaml:"max_recipients,omitempty"`
	IdleTimeout    Duration `yaml:"idle_timeout,omitempty"`
	SessionTimeout Duration `yaml:"session_timeout,omitempty"`
	// VirtualGateway names the outbound source used for mail received here.
	VirtualGateway string `yaml:"virtual_gateway,omitempty"`
	// RejectInvalidBounces refuses bounces (MAIL FROM:<>) to our domains
	// whose recipient lacks a valid bounce-verification tag.
	RejectInvalidBounces bool `yaml:"reject_invalid_bounces,omitempty"`

	// Networks is RelayFrom parsed.
	Networks []netip.Prefix `yaml:"-"`
}

// Cert names a certificate chain and its key (PEM files).
type Cert struct {
	CertFile string `yaml:"cert_file,omitempty"`
	KeyFile  string `yaml:"key_file,omitempty"`
}

// DNS configures the resolver.
type DNS struct {
	Resolvers []string `yaml:"resolvers,omitempty"`
	Timeout   Duration `yaml:"timeout,omitempty"`
}

// TLS configures outbound certificate verification.
type TLS struct {
	CAFile      string `yaml:"ca_file,omitempty"`
	SystemRoots *bool  `yaml:"system_roots,omitempty"`
	// ClientCert is presented on outbound TLS connections (destconfig SETUP).
	ClientCert *Cert `yaml:"client_cert,omitempty"`
	// Alert notifies an administrator when delivery to a destination that
	// requires TLS fails (destconfig SETUP).
	Alert TLSAlert `yaml:"alert,omitempty"`
}

// TLSAlert is the "send an alert when a required TLS connection fails" setting.
type TLSAlert struct {
	Enabled bool `yaml:"enabled,omitempty"`
	// To receives the notification mail; empty: only the Warning log line.
	To string `yaml:"to,omitempty"`
	// Interval is the least time between two alerts for one domain (default 1h).
	Interval Duration `yaml:"interval,omitempty"`
}

// UseSystemRoots reports whether the system trust store is used (default yes).
func (t TLS) UseSystemRoots() bool { return t.SystemRoots == nil || *t.SystemRoots }

// Delivery configures the delivery client and the scheduler.
type Delivery struct {
	Port           int      `yaml:"port,omitempty"`
	ConnectTimeout Duration `yaml:"connect_timeout,omitempty"`
	// MaxActive bounds the messages held in the active queue at once.
	MaxActive int `yaml:"max_active,omitempty"`
	// MaxConnections bounds outbound connections across all destinations.
	MaxConnections int `yaml:"max_connections,omitempty"`
}

// Destination is a Destination Control profile; nil fields inherit from
// the default profile.
type Destination struct {
	IPPreference             *string         `yaml:"ip_preference,omitempty"`
	MaxConcurrency           *int            `yaml:"max_concurrency,omitempty"`
	MaxMessagesPerConnection *int            `yaml:"max_messages_per_connection,omitempty"`
	RecipientLimit           *RecipientLimit `yaml:"recipient_limit,omitempty"`
	LimitsScope              *string         `yaml:"limits_scope,omitempty"`
	LimitsApply              *string         `yaml:"limits_apply,omitempty"`
	TLS                      *TLSMode        `yaml:"tls,omitempty"`
	DANE                     *string         `yaml:"dane,omitempty"`
	MTASTS                   *bool           `yaml:"mta_sts,omitempty"`
	BounceVerification       *bool           `yaml:"bounce_verification,omitempty"`
	BounceProfile            *string         `yaml:"bounce_profile,omitempty"`
}

// RecipientLimit holds recipients back once Count were sent to a
// destination within Minutes; Count 0 means no limit.
type RecipientLimit struct {
	Count   int `yaml:"count,omitempty"`
	Minutes int `yaml:"minutes,omitempty"`
}

// Route is an SMTP route: mail for a domain goes to the listed hosts
// instead of the domain's MX hosts, or through an MX lookup (usedns), or
// nowhere (discard, the appliance's /dev/null).
type Route struct {
	Hosts   []RouteHost `yaml:"hosts,omitempty"`
	UseDNS  bool        `yaml:"usedns,omitempty"`
	Discard bool        `yaml:"discard,omitempty"`
	// MTASTS applies the MTA-STS policy of the route host's own domain
	// (RFC 8461 §3.4, the smart-host rule); the recipient domain's policy
	// never applies to a routed domain.
	MTASTS bool `yaml:"mta_sts,omitempty"`
}

// RouteHost is one route destination; priority 0 is highest.
type RouteHost struct {
	Host     string `yaml:"host,omitempty"`
	Port     int    `yaml:"port,omitempty"`
	Priority int    `yaml:"priority,omitempty"`
}

// VirtualGateway is a named outbound source address.
type VirtualGateway struct {
	// Source is the local IP address deliveries are made from.
	Source string `yaml:"source,omitempty"`
	// SenderDomains select this gateway for mail from these domains
	// (a listener's virtual_gateway takes precedence).
	SenderDomains []string `yaml:"sender_domains,omitempty"`
}

// BounceVerification configures prvs address tagging (BATV).
type BounceVerification struct {
	// Keys sign tags; the last is used to tag, earlier ones still verify
	// for seven days after the key that replaced them was added.
	Keys []BVKey `yaml:"keys,omitempty"`
	// Domains are ours: bounces to them are checked on listeners with
	// reject_invalid_bounces.
	Domains []string `yaml:"domains,omitempty"`
}

// BVKey is one tagging key.
type BVKey struct {
	Key   string `yaml:"key,omitempty"`
	Added string `yaml:"added,omitempty"` // YYYY-MM-DD
}

// Bounce is the retry schedule and bounce settings (the default bounce profile).
type Bounce struct {
	MaxRetries       int      `yaml:"max_retries,omitempty"`
	MaxQueueLifetime Duration `yaml:"max_queue_lifetime,omitempty"`
	InitialRetry     Duration `yaml:"initial_retry,omitempty"`
	MaxRetryInterval Duration `yaml:"max_retry_interval,omitempty"`
	SendBounces      *bool    `yaml:"send_bounces,omitempty"`
	// BounceAddress receives DSNs instead of the envelope sender.
	BounceAddress string         `yaml:"bounce_address,omitempty"`
	MaxBounceCopy Size           `yaml:"max_bounce_copy,omitempty"`
	DelayWarnings *DelayWarnings `yaml:"delay_warnings,omitempty"`
}

// DelayWarnings configures "delayed" DSNs (RFC 3464 Action: delayed).
type DelayWarnings struct {
	Enabled  bool     `yaml:"enabled,omitempty"`
	Interval Duration `yaml:"interval,omitempty"` // least time between warnings (default 4h)
	Count    int      `yaml:"count,omitempty"`    // warnings per message at most (default 1)
}

// MTASTS holds the global MTA-STS settings.
type MTASTS struct {
	FetchTimeout Duration `yaml:"fetch_timeout,omitempty"`
	Proxy        string   `yaml:"proxy,omitempty"`
	Refresh      *bool    `yaml:"refresh,omitempty"`
}

// Logs configures the mail log.
type Logs struct {
	Level       string   `yaml:"level,omitempty"`
	MaxSize     Size     `yaml:"max_size,omitempty"`
	MaxAge      Duration `yaml:"max_age,omitempty"`
	Keep        int      `yaml:"keep,omitempty"`
	Syslog      bool     `yaml:"syslog,omitempty"`
	MinFreeDisk Size     `yaml:"min_free_disk,omitempty"`
}

// Metrics configures the Prometheus endpoint ("" address: off).
type Metrics struct {
	Address string `yaml:"address,omitempty"`
}

// Control configures the control socket used by the CLI.
type Control struct {
	Socket string `yaml:"socket,omitempty"`
}

// Profile is a destination's effective settings after inheritance.
type Profile struct {
	Name                     string // the entry that matched ("default", "example.com", ".example.com")
	IPPreference             string // "" (as resolved), prefer-ipv4, prefer-ipv6, require-ipv4, require-ipv6
	MaxConcurrency           int
	MaxMessagesPerConnection int
	RecipientLimit           RecipientLimit
	LimitsScope              string // domain | mx-ip
	LimitsApply              string // system | virtual-gateway
	TLS                      tlspolicy.Mode
	DANE                     string // none | opportunistic | mandatory
	MTASTS                   bool
	BounceVerification       bool
	BounceProfile            string
}

// Allowed values of the enumerated profile fields.
var (
	IPPreferences = []string{"prefer-ipv4", "prefer-ipv6", "require-ipv4", "require-ipv6"}
	DANEModes     = []string{"none", "opportunistic", "mandatory"}
	LimitScopes   = []string{"domain", "mx-ip"}
	LimitApplies  = []string{"system", "virtual-gateway"}
)

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

// ParseRaw decodes YAML strictly without applying defaults or validating:
// the form that configuration edits work on and write back.
func ParseRaw(data []byte, name string) (*Config, error) {
	c := &Config{}
	if len(bytes.TrimSpace(data)) == 0 {
		return c, nil
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(c); err != nil {
		return nil, fmt.Errorf("%s: %s", displayName(name), cleanYAMLError(err))
	}
	return c, nil
}

// Marshal writes a (raw) configuration as YAML, omitting unset keys.
func Marshal(c *Config) ([]byte, error) {
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(c); err != nil {
		return nil, fmt.Errorf("encode config: %w", err)
	}
	enc.Close()
	if strings.TrimSpace(buf.String()) == "{}" {
		return nil, nil
	}
	return buf.Bytes(), nil
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
	// Domain names are case-insensitive and Profile and RouteFor look up
	// the lower-case name without a trailing dot: store the keys that way,
	// or an entry written "Partner.Example" silently never applies.
	c.Destinations = domainKeys(bad, "destinations", c.Destinations, "default")
	c.SMTPRoutes = domainKeys(bad, "smtp_routes", c.SMTPRoutes, "ALL")
	if c.Destinations == nil {
		c.Destinations = map[string]*Destination{}
	}
	def := c.Destinations["default"]
	if def == nil {
		def = &Destination{}
		c.Destinations["default"] = def
	}
	setDefault(&def.TLS, TLSMode(tlspolicy.Preferred))
	setDefault(&def.MTASTS, false)
	setDefault(&def.MaxConcurrency, DefaultConcurrency)
	setDefault(&def.MaxMessagesPerConnection, DefaultMsgsPerConn)
	setDefault(&def.IPPreference, "prefer-ipv4")
	setDefault(&def.RecipientLimit, RecipientLimit{})
	setDefault(&def.LimitsScope, "domain")
	setDefault(&def.LimitsApply, "system")
	setDefault(&def.DANE, "none")
	setDefault(&def.BounceVerification, false)
	setDefault(&def.BounceProfile, "Default")
	daneOn := false
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
		if r := d.RecipientLimit; r != nil {
			if r.Count < 0 || r.Count > 1000000000 {
				bad("destinations.%s.recipient_limit.count %d: want 0-1000000000", name, r.Count)
			}
			if r.Count > 0 && (r.Minutes < 1 || r.Minutes > 60) {
				bad("destinations.%s.recipient_limit.minutes %d: want 1-60", name, r.Minutes)
			}
		}
		checkEnum(bad, "destinations."+name+".ip_preference", d.IPPreference, IPPreferences)
		checkEnum(bad, "destinations."+name+".limits_scope", d.LimitsScope, LimitScopes)
		checkEnum(bad, "destinations."+name+".limits_apply", d.LimitsApply, LimitApplies)
		checkEnum(bad, "destinations."+name+".dane", d.DANE, DANEModes)
		if d.BounceProfile != nil && *d.BounceProfile != "Default" && c.BounceProfiles[*d.BounceProfile] == nil {
			bad("destinations.%s.bounce_profile %q: no such bounce profile (define it under bounce_profiles)", name, *d.BounceProfile)
		}
		p := c.profileFor(name)
		if p.MTASTS && p.TLS == tlspolicy.None {
			bad("destinations.%s: mta_sts: true needs TLS, but tls is none", name)
		}
		if p.DANE != "none" && p.TLS == tlspolicy.None {
			bad("destinations.%s: dane: %s needs TLS, but tls is none", name, p.DANE)
		}
		if p.DANE != "none" {
			daneOn = true
		}
	}
	if daneOn {
		// RFC 7672 §2.1.3: the AD bit is only as good as the path to
		// the validating resolver.
		for _, w := range dane.CheckResolvers(c.DNS.Resolvers) {
			c.Warnings = append(c.Warnings, "dane: "+w)
		}
	}
	if *def.MTASTS {
		c.Warnings = append(c.Warnings, "destinations.default.mta_sts is true: every destination domain costs MTA-STS lookups")
	}
	c.finishRoutes(bad)
	for name, g := range c.VirtualGateways {
		if g == nil {
			bad("virtual_gateways.%s: empty entry", name)
			continue
		}
		if _, err := netip.ParseAddr(g.Source); err != nil {
			bad("virtual_gateways.%s.source %q: want an IP address", name, g.Source)
		}
	}
	for i, l := range c.Listeners {
		if l.VirtualGateway != "" && c.VirtualGateways[l.VirtualGateway] == nil {
			bad("listeners[%d].virtual_gateway %q: no such virtual gateway", i, l.VirtualGateway)
		}
		if l.RejectInvalidBounces && len(c.BounceVerification.Keys) == 0 {
			bad("listeners[%d].reject_invalid_bounces needs bounce_verification.keys", i)
		}
	}
	var prevAdded time.Time
	for i, k := range c.BounceVerification.Keys {
		if len(k.Key) < 16 {
			bad("bounce_verification.keys[%d].key: at least 16 characters", i)
		}
		added, err := time.Parse("2006-01-02", k.Added)
		if err != nil {
			bad("bounce_verification.keys[%d].added %q: want YYYY-MM-DD", i, k.Added)
			continue
		}
		if added.Before(prevAdded) {
			bad("bounce_verification.keys[%d].added %s: keys must be listed oldest first", i, k.Added)
		}
		prevAdded = added
	}
	if c.TLS.Alert.Interval == 0 {
		c.TLS.Alert.Interval = Duration(time.Hour)
	}
	if c.TLS.Alert.To != "" && !strings.Contains(c.TLS.Alert.To, "@") {
		bad("tls.alert.to %q: want an email address", c.TLS.Alert.To)
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
	if b.DelayWarnings == nil {
		b.DelayWarnings = &DelayWarnings{}
	}
	if b.DelayWarnings.Interval == 0 {
		b.DelayWarnings.Interval = Duration(4 * time.Hour)
	}
	if b.DelayWarnings.Count == 0 {
		b.DelayWarnings.Count = 1
	}
	checkBounce(bad, "bounce", b)
	for name, bp := range c.BounceProfiles {
		if bp != nil {
			checkBounce(bad, "bounce_profiles."+name, bp)
		}
		if name == "Default" {
			bad("bounce_profiles.Default: the default profile is the top-level bounce: key")
			continue
		}
		if !validProfileName(name) {
			bad("bounce_profiles.%s: the bounce profile name must start with a letter or underscore", name)
		}
		if bp == nil {
			bad("bounce_profiles.%s: empty entry (write {} to inherit everything)", name)
			continue
		}
		if bp.MaxRetryInterval != 0 && bp.InitialRetry != 0 && bp.MaxRetryInterval < bp.InitialRetry {
			bad("bounce_profiles.%s.max_retry_interval is below its initial_retry", name)
		}
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
	c.finishWebUI(bad)
	return errors.Join(errs...)
}

// checkBounce applies the ranges of a bounce profile's values (zero means
// inherited or defaulted, and is checked where it is filled in).
func checkBounce(bad func(string, ...any), key string, b *Bounce) {
	const year = Duration(365 * 24 * time.Hour)
	if b.MaxRetries < 0 || b.MaxRetries > 10000 {
		bad("%s.max_retries %d: want 1-10000", key, b.MaxRetries)
	}
	for _, d := range []struct {
		name string
		v    Duration
	}{{"max_queue_lifetime", b.MaxQueueLifetime}, {"initial_retry", b.InitialRetry}, {"max_retry_interval", b.MaxRetryInterval}} {
		if d.v < 0 || d.v > year || (d.v != 0 && d.v < Duration(time.Second)) {
			bad("%s.%s %v: want 1s to one year", key, d.name, d.v)
		}
	}
	if b.MaxBounceCopy < 0 || b.MaxBounceCopy > 100<<20 {
		bad("%s.max_bounce_copy %d: want at most 100MB", key, b.MaxBounceCopy)
	}
	if b.BounceAddress != "" && !strings.Contains(b.BounceAddress, "@") {
		bad("%s.bounce_address %q: want an email address", key, b.BounceAddress)
	}
	if w := b.DelayWarnings; w != nil && (w.Count < 0 || w.Count > 100) {
		bad("%s.delay_warnings.count %d: want 1-100", key, w.Count)
	}
}

// domainKeys returns m with its domain keys in lower case and without a
// trailing dot (keep, the "default" or "ALL" entry, as written); two keys
// that differ only so are an error.
func domainKeys[T any](bad func(string, ...any), key string, m map[string]T, keep string) map[string]T {
	if m == nil {
		return nil
	}
	names := make([]string, 0, len(m))
	for n := range m {
		names = append(names, n)
	}
	sort.Strings(names)
	out := make(map[string]T, len(m))
	for _, n := range names {
		k := n
		if k != keep {
			k = strings.ToLower(strings.TrimSuffix(k, "."))
		}
		if _, dup := out[k]; dup {
			bad("%s.%s: %s is listed twice (domain names are case-insensitive)", key, n, k)
			continue
		}
		out[k] = m[n]
	}
	return out
}

func setDefault[T any](p **T, v T) {
	if *p == nil {
		*p = &v
	}
}

func checkEnum(bad func(string, ...any), key string, v *string, allowed []string) {
	if v == nil {
		return
	}
	for _, a := range allowed {
		if *v == a {
			return
		}
	}
	bad("%s %q: want one of %s", key, *v, strings.Join(allowed, ", "))
}

func validProfileName(n string) bool {
	if n == "" {
		return false
	}
	c := n[0]
	return c == '_' || (c|0x20 >= 'a' && c|0x20 <= 'z')
}

// MaxRoutes is the appliance's limit on SMTP routes (ALL included).
const MaxRoutes = 40000

func (c *Config) finishRoutes(bad func(string, ...any)) {
	if len(c.SMTPRoutes) > MaxRoutes {
		bad("smtp_routes: %d routes; there is a maximum of %d routes", len(c.SMTPRoutes), MaxRoutes)
	}
	for name, r := range c.SMTPRoutes {
		key := "smtp_routes." + name
		if name != "ALL" {
			if err := checkDestName(name); err != nil {
				bad("%s: %v", key, err)
			}
		}
		if r == nil {
			bad("%s: empty route (give hosts, usedns: true or discard: true)", key)
			continue
		}
		kinds := 0
		if len(r.Hosts) > 0 {
			kinds++
		}
		if r.UseDNS {
			kinds++
		}
		if r.Discard {
			kinds++
		}
		if kinds != 1 {
			bad("%s: give exactly one of hosts, usedns: true, discard: true", key)
		}
		if r.MTASTS && len(r.Hosts) == 0 {
			bad("%s.mta_sts: only for routes with hosts", key)
		}
		if len(r.Hosts) > 1000 {
			bad("%s: routes may not contain more than 1000 destinations", key)
		}
		seen := map[string]bool{}
		for i, h := range r.Hosts {
			hk := fmt.Sprintf("%s.hosts[%d]", key, i)
			if h.Host == "" || strings.ContainsAny(h.Host, " /@") {
				bad("%s.host %q: want a host name or IP address", hk, h.Host)
			}
			if h.Port < 0 || h.Port > 65535 {
				bad("%s.port %d: want 1-65535", hk, h.Port)
			}
			if h.Priority < 0 || h.Priority > 65535 {
				bad("%s.priority %d: want 0-65535 (0 is highest)", hk, h.Priority)
			}
			id := strings.ToLower(h.Host) + ":" + fmt.Sprint(h.Port)
			if seen[id] {
				bad("%s: the host %s is listed twice", hk, h.Host)
			}
			seen[id] = true
		}
	}
}

// RouteFor returns the SMTP route for a recipient domain: the exact entry,
// else the longest ".suffix" entry, else ALL; nil when none applies.
func (c *Config) RouteFor(domain string) (name string, r *Route) {
	domain = strings.ToLower(strings.TrimSuffix(domain, "."))
	if r := c.SMTPRoutes[domain]; r != nil {
		return domain, r
	}
	for d := domain; ; {
		i := strings.IndexByte(d, '.')
		if i < 0 {
			break
		}
		if r := c.SMTPRoutes[d[i:]]; r != nil {
			return d[i:], r
		}
		d = d[i+1:]
	}
	if r := c.SMTPRoutes["ALL"]; r != nil {
		return "ALL", r
	}
	return "", nil
}

// BounceProfile returns the named bounce profile with unset fields taken
// from the Default profile; unknown names give the Default profile.
func (c *Config) BounceProfile(name string) Bounce {
	def := c.Bounce
	bp := c.BounceProfiles[name]
	if name == "Default" || bp == nil {
		return def
	}
	out := *bp
	if out.MaxRetries == 0 {
		out.MaxRetries = def.MaxRetries
	}
	if out.MaxQueueLifetime == 0 {
		out.MaxQueueLifetime = def.MaxQueueLifetime
	}
	if out.InitialRetry == 0 {
		out.InitialRetry = def.InitialRetry
	}
	if out.MaxRetryInterval == 0 {
		out.MaxRetryInterval = def.MaxRetryInterval
	}
	if out.SendBounces == nil {
		out.SendBounces = def.SendBounces
	}
	if out.BounceAddress == "" {
		out.BounceAddress = def.BounceAddress
	}
	if out.MaxBounceCopy == 0 {
		out.MaxBounceCopy = def.MaxBounceCopy
	}
	if out.DelayWarnings == nil {
		out.DelayWarnings = def.DelayWarnings
	}
	return out
}

// Gateway returns the virtual gateway for mail received on listener li
// from sender (listener first, then sender domain); "" for none.
func (c *Config) Gateway(li int, sender string) string {
	if li >= 0 && li < len(c.Listeners) && c.Listeners[li].VirtualGateway != "" {
		return c.Listeners[li].VirtualGateway
	}
	dom := strings.ToLower(sender[strings.LastIndexByte(sender, '@')+1:])
	for name, g := range c.VirtualGateways {
		for _, d := range g.SenderDomains {
			if strings.EqualFold(d, dom) {
				return name
			}
		}
	}
	return ""
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
	if d == nil {
		d = &Destination{}
	}
	return Profile{
		Name:                     name,
		IPPreference:             pick(d.IPPreference, def.IPPreference),
		MaxConcurrency:           pick(d.MaxConcurrency, def.MaxConcurrency),
		MaxMessagesPerConnection: pick(d.MaxMessagesPerConnection, def.MaxMessagesPerConnection),
		RecipientLimit:           pick(d.RecipientLimit, def.RecipientLimit),
		LimitsScope:              pick(d.LimitsScope, def.LimitsScope),
		LimitsApply:              pick(d.LimitsApply, def.LimitsApply),
		TLS:                      tlspolicy.Mode(pick(d.TLS, def.TLS)),
		DANE:                     pick(d.DANE, def.DANE),
		MTASTS:                   pick(d.MTASTS, def.MTASTS),
		BounceVerification:       pick(d.BounceVerification, def.BounceVerification),
		BounceProfile:            pick(d.BounceProfile, def.BounceProfile),
	}
}

// pick returns *v, or *def when v is unset (def is always set on the
// default entry after finish).
func pick[T any](v, def *T) T {
	if v != nil {
		return *v
	}
	if def != nil {
		return *def
	}
	var zero T
	return zero
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

// ---- Web UI (webui:) ----

// WebUI configures the administration web interface (HTTPS). It runs only
// when the webui: key is present; `webui: {}` serves on DefaultWebUIAddress
// with a self-signed certificate kept in <data_dir>/webui/.
type WebUI struct {
	Address  string `yaml:"address,omitempty"`
	CertFile string `yaml:"cert_file,omitempty"`
	KeyFile  string `yaml:"key_file,omitempty"`
	// IdleTimeout ends a session left unused this long (default 30m).
	IdleTimeout Duration `yaml:"idle_timeout,omitempty"`
}

// DefaultWebUIAddress is where the web UI listens when webui.address is unset.
const DefaultWebUIAddress = "127.0.0.1:8443"

func (c *Config) finishWebUI(bad func(string, ...any)) {
	w := c.WebUI
	if w == nil {
		return
	}
	if w.Address == "" {
		w.Address = DefaultWebUIAddress
	}
	if _, _, err := net.SplitHostPort(w.Address); err != nil {
		bad("webui.address %q: want host:port", w.Address)
	}
	if (w.CertFile == "") != (w.KeyFile == "") {
		bad("webui: cert_file and key_file go together (leave both out for a self-signed certificate)")
	}
	if w.IdleTimeout == 0 {
		w.IdleTimeout = Duration(30 * time.Minute)
	}
	if w.IdleTimeout < Duration(time.Minute) || w.IdleTimeout > Duration(24*time.Hour) {
		bad("webui.idle_timeout %v: want 1m to 24h", w.IdleTimeout)
	}
}
