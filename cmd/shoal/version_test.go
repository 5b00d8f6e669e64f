package main

import (
	"runtime"
	"testing"
)

func TestVersion(t *testing.T) {
	out, _, err := runCLI(t, "version")
	if err != nil {
		t.Fatalf("version: %v", err)
	}
	want := "shoal 0.1.0\nbuilt with " + runtime.Version() + " " + runtime.GOOS + "/" + runtime.GOARCH + "\n"
	if out != want {
		t.Errorf("printed %q, want %q", out, want)
	}
}

func TestVersionBadArgs(t *testing.T) {
	_, _, err := runCLI(t, "version", "--short")
	wantErr(t, err, "flag provided but not defined: -short")
}
