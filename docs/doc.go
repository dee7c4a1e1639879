// Package docs holds the operator's documentation that ships with the
// binary: the markdown sources of the knockgate(8) and knockgate.hcl(5) man
// pages, which `make man` turns into roff with go-md2man. It has no code;
// its tests keep the man pages and the bash and zsh completions in
// contrib/completion true to the commands and flags the binary lists in
// its help, and to the settings of contrib/examples/reference.hcl.
package docs
