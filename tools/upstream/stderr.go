package upstream

import (
	"bytes"
	"log/slog"
	"sync"
)

// lineLog sends a stdio upstream's stderr to our log, one record a line.
type lineLog struct {
	log *slog.Logger
	mu  sync.Mutex
	buf []byte
}

const maxLogLine = 4096

func (l *lineLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.buf = append(l.buf, p...)
	for {
		i := bytes.IndexByte(l.buf, '\n')
		if i < 0 {
			if len(l.buf) > maxLogLine {
				l.log.Info("upstream stderr", "line", string(l.buf[:maxLogLine]))
				l.buf = l.buf[:0]
			}
			return len(p), nil
		}
		line := l.buf[:i]
		if len(line) > maxLogLine {
			line = line[:maxLogLine]
		}
		l.log.Info("upstream stderr", "line", string(line))
		l.buf = l.buf[i+1:]
	}
}
