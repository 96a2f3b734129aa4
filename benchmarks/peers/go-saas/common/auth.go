package common

import (
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"strconv"
	"strings"
	"time"
)

// HmacSHA256Hex is HMAC-SHA256 of message under secret in hex (crypto.hpp).
func HmacSHA256Hex(secret, message string) string {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte(message))
	return hex.EncodeToString(m.Sum(nil))
}

// SHA256Hex is SHA-256 of s in hex (crypto.hpp).
func SHA256Hex(s string) string {
	d := sha256.Sum256([]byte(s))
	return hex.EncodeToString(d[:])
}

// TokenValidity is how long a service token is valid (auth.hpp).
const TokenValidity = 300

// ServiceAuth signs and checks the service tokens of auth.hpp: metadata "x-saas-caller" and
// "x-saas-token" = "<expiry unix seconds>.<HMAC-SHA256(secret, caller + '.' + expiry)>".
type ServiceAuth struct {
	Caller string
	Secret string
}

// Sign is the token of this caller now.
func (a ServiceAuth) Sign() string {
	expiry := strconv.FormatInt(time.Now().Unix()+TokenValidity, 10)
	return expiry + "." + HmacSHA256Hex(a.Secret, a.Caller+"."+expiry)
}

// Verify is the authenticated caller of a call, or "" when its token is missing, forged or
// expired.
func (a ServiceAuth) Verify(callers, tokens []string) string {
	if len(callers) == 0 || len(tokens) == 0 {
		return ""
	}
	caller, token := callers[0], tokens[0]
	dot := strings.IndexByte(token, '.')
	if dot <= 0 || dot > 12 {
		return ""
	}
	expiry := token[:dot]
	if strings.Trim(expiry, "0123456789") != "" {
		return ""
	}
	e, err := strconv.ParseInt(expiry, 10, 64)
	now := time.Now().Unix()
	if err != nil || e < now || e > now+2*TokenValidity {
		return ""
	}
	want := HmacSHA256Hex(a.Secret, caller+"."+expiry)
	if subtle.ConstantTimeCompare([]byte(token[dot+1:]), []byte(want)) != 1 {
		return ""
	}
	return caller
}
