package common

import (
	"fmt"
	"os"
	"strconv"
	"time"
)

// Get is the setting name, or def when unset (config.hpp, without its .env file).
func Get(name, def string) string {
	if v, ok := os.LookupEnv(name); ok && v != "" {
		return v
	}
	return def
}

// Require is the setting name; it exits when unset.
func Require(service, name string) string {
	v := Get(name, "")
	if v == "" {
		Fatal(service, name+" is required")
	}
	return v
}

// Secret is a setting of at least 32 characters (auth.hpp, keys.hpp).
func Secret(service, name string) string {
	v := Require(service, name)
	if len(v) < 32 {
		Fatal(service, fmt.Sprintf("%s must be at least 32 characters, got %d", name, len(v)))
	}
	return v
}

// Integer is the setting name as an integer within [lo, hi], def when unset.
func Integer(service, name string, def, lo, hi int64) int64 {
	v := Get(name, "")
	if v == "" {
		return def
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < lo || n > hi {
		Fatal(service, fmt.Sprintf("%s must be an integer in %d..%d, got %q", name, lo, hi, v))
	}
	return n
}

// Millis is the setting name in milliseconds.
func Millis(service, name string, def int64) time.Duration {
	return time.Duration(Integer(service, name, def, 0, 86400000)) * time.Millisecond
}

// Fatal logs msg and exits 1.
func Fatal(service, msg string) {
	Log(service, "error", "", msg, nil)
	os.Exit(1)
}
