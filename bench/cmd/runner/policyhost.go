package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// policyHost is the MTA-STS policy web server of every dN.bench.test: HTTPS
// on 127.0.0.1:443, a certificate for mta-sts.dN.bench.test issued on demand
// (by SNI) by the runner's own CA, and an enforce-mode policy naming
// mx.bench.test (the sink).
type policyHost struct {
	caPEM    []byte
	caCert   *x509.Certificate
	caKey    *ecdsa.PrivateKey
	leafKey  *ecdsa.PrivateKey
	certs    sync.Map // server name → *tls.Certificate
	srv      *http.Server
	requests atomic.Int64
	serial   atomic.Int64
}

const stsPolicy = "version: STSv1\r\nmode: enforce\r\nmx: mx.bench.test\r\nmax_age: 86400\r\n"

func newPolicyCA() (*policyHost, error) {
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(now.UnixNano()),
		Subject:               pkix.Name{CommonName: "Outpost bench policy-host CA", Organization: []string{"Outpost bench"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(7 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, caKey.Public(), caKey)
	if err != nil {
		return nil, err
	}
	ca, _ := x509.ParseCertificate(der)
	leafKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	p := &policyHost{caCert: ca, caKey: caKey, leafKey: leafKey,
		caPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
	p.serial.Store(now.UnixNano())
	return p, nil
}

// certFor issues (once) a certificate for one mta-sts.dN.bench.test name.
func (p *policyHost) certFor(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	name := strings.ToLower(strings.TrimSuffix(hello.ServerName, "."))
	if !strings.HasPrefix(name, "mta-sts.") || stsDomainIndex(strings.TrimPrefix(name, "mta-sts.")+".") == 0 {
		return nil, fmt.Errorf("no certificate for %q", hello.ServerName)
	}
	if c, ok := p.certs.Load(name); ok {
		return c.(*tls.Certificate), nil
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(p.serial.Add(1)),
		Subject:      pkix.Name{CommonName: name},
		DNSNames:     []string{name},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(7 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.caCert, p.leafKey.Public(), p.caKey)
	if err != nil {
		return nil, err
	}
	c := &tls.Certificate{Certificate: [][]byte{der, p.caCert.Raw}, PrivateKey: p.leafKey}
	actual, _ := p.certs.LoadOrStore(name, c)
	return actual.(*tls.Certificate), nil
}

// start listens on addr (127.0.0.1:443).
func (p *policyHost) start(addr string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/.well-known/mta-sts.txt", func(w http.ResponseWriter, r *http.Request) {
		p.requests.Add(1)
		host := strings.ToLower(r.Host)
		if h, _, err := net.SplitHostPort(host); err == nil {
			host = h
		}
		if !strings.HasPrefix(host, "mta-sts.") || stsDomainIndex(strings.TrimPrefix(host, "mta-sts.")+".") == 0 {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "text/plain")
		w.Write([]byte(stsPolicy))
	})
	p.srv = &http.Server{
		Handler:      mux,
		TLSConfig:    &tls.Config{GetCertificate: p.certFor, MinVersion: tls.VersionTLS12},
		ReadTimeout:  10 * time.Second,
		WriteTimeout: 10 * time.Second,
		ErrorLog:     log.New(io.Discard, "", 0),
	}
	go func() {
		if err := p.srv.ServeTLS(ln, "", ""); err != nil && !errors.Is(err, http.ErrServerClosed) {
			fmt.Printf("bench: policy host: %v\n", err)
		}
	}()
	return nil
}

func (p *policyHost) stop() {
	if p.srv != nil {
		p.srv.Close()
	}
}
