//go:build linux

package main

import (
	"bufio"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// clockStepCommand is the console line that steps the guest's wall clock:
// "jnrelay-clock-step SECONDS" (a signed integer). It exists for the image
// test, which proves that relayd's calls and expiry do not depend on the
// wall clock; on a real device NTP makes such steps, typically the first
// one after boot on a router without a battery-backed clock.
const clockStepCommand = "jnrelay-clock-step"

// parseClockStep reads a console line; ok is false for any other line.
func parseClockStep(line string) (step time.Duration, ok bool, err error) {
	f := strings.Fields(line)
	if len(f) == 0 || f[0] != clockStepCommand {
		return 0, false, nil
	}
	if len(f) != 2 {
		return 0, true, fmt.Errorf("%s: want one argument, seconds to step by", clockStepCommand)
	}
	s, err := strconv.ParseInt(f[1], 10, 32)
	if err != nil {
		return 0, true, fmt.Errorf("%s: %q is not a whole number of seconds", clockStepCommand, f[1])
	}
	return time.Duration(s) * time.Second, true, nil
}

// serveConsole acts on the console's clock-step and show lines until the
// console ends; every other line is ignored.
func serveConsole(r io.Reader) {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		if path, ok, err := parseShow(sc.Text()); ok {
			if err != nil {
				logf("%v", err)
			} else {
				show(path)
			}
			continue
		}
		step, ok, err := parseClockStep(sc.Text())
		switch {
		case err != nil:
			logf("%v", err)
		case ok:
			if err := stepClock(step); err != nil {
				logf("clock step by %s failed: %v", step, err)
			}
		}
	}
}

// stepClock moves CLOCK_REALTIME by step at once, as settimeofday does.
func stepClock(step time.Duration) error {
	var now unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_REALTIME, &now); err != nil {
		return err
	}
	next := unix.NsecToTimespec(now.Nano() + step.Nanoseconds())
	if err := unix.ClockSettime(unix.CLOCK_REALTIME, &next); err != nil {
		return err
	}
	logf("clock stepped by %s: wall clock now %s", step, time.Unix(next.Unix()).UTC().Format(time.RFC3339))
	return nil
}
