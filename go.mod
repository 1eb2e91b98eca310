module github.com/jnrelay/jnrelay

go 1.26.0

require golang.org/x/time v0.16.0

require golang.org/x/sys v0.49.0 // indirect
