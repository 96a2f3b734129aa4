package common

import (
	"encoding/json"
	"os"
	"time"
)

// Log writes one JSON line on stderr, as log.hpp does:
// {"level":..,"msg":..,"service":..,"trace_id":..,"ts":..,...fields} (keys in order).
func Log(service, level, traceID, msg string, fields map[string]any) {
	line := map[string]any{
		"ts":      time.Now().UTC().Format("2006-01-02T15:04:05.000Z"),
		"service": service, "level": level, "msg": msg,
	}
	if traceID != "" {
		line["trace_id"] = traceID
	}
	for k, v := range fields {
		line[k] = v
	}
	text, err := json.Marshal(line)
	if err != nil {
		return
	}
	os.Stderr.Write(append(text, '\n')) // one write per line
}
