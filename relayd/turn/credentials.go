package turn

import (
	"crypto/hmac"
	"crypto/sha1"
	"encoding/base64"
	"strconv"
	"strings"
	"time"
)

// Password returns the TURN REST password of username under secret:
// base64(HMAC-SHA1(secret, username)).
func Password(secret []byte, username string) string {
	mac := hmac.New(sha1.New, secret)
	mac.Write([]byte(username))
	return base64.StdEncoding.EncodeToString(mac.Sum(nil))
}

// Username returns the TURN REST username of a credential id valid until
// expires.
func Username(expires time.Time, id string) string {
	return strconv.FormatInt(expires.Unix(), 10) + ":" + id
}

// parseUsername splits a TURN REST username "<expiry>:<id>".
func parseUsername(username string) (expires time.Time, id string, ok bool) {
	ts, id, found := strings.Cut(username, ":")
	if !found || id == "" {
		return time.Time{}, "", false
	}
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil || sec <= 0 {
		return time.Time{}, "", false
	}
	return time.Unix(sec, 0), id, true
}
