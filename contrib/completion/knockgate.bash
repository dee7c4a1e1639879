# bash completion for knockgate(8).
#
# Installed as /usr/share/bash-completion/completions/knockgate (the Debian
# package, make install), or source it from ~/.bashrc. It needs bash alone,
# not the bash-completion package. docs/cli_test.go checks that it offers
# every command `knockgate help` lists and every flag of each command's
# --help.

# _knockgate_flags CMD: the flags of CMD, as its --help lists them.
_knockgate_flags() {
	case $1 in
	run) echo --config --log-format --log-level ;;
	validate) echo --config ;;
	fmt) echo -check -diff -recursive -w ;;
	knock) echo --close --config --delay --door ;;
	sequence) echo --config --door ;;
	spa) echo --access --allow-ip --config --door --hmac-digest --hmac-key-base64 --key-base64 --mode --port --save-packet --timeout ;;
	keygen) echo --access --hmac-digest --kind --port --quiet --server ;;
	rules) echo -4 -6 --config --dnat --format --interface --queue --queues ;;
	status) echo --json --socket ;;
	revoke) echo --door --socket --source ;;
	reload) echo --socket ;;
	version) ;;
	esac
}

# _knockgate_doors FILE: the door names of a policy, for --door.
_knockgate_doors() {
	[ -r "$1" ] || return 0
	sed -n 's/^[[:space:]]*door[[:space:]]*"\([^"]*\)".*/\1/p' -- "$1" 2>/dev/null
}

_knockgate() {
	local cur=${COMP_WORDS[COMP_CWORD]} prev=
	local commands="run validate fmt knock sequence spa keygen rules status revoke reload version help"
	local cmd=${COMP_WORDS[1]-} i config=/etc/knockgate/policy.hcl
	[ "$COMP_CWORD" -gt 0 ] && prev=${COMP_WORDS[COMP_CWORD - 1]}
	# COMP_WORDBREAKS splits --flag=value into --flag, =, value.
	if [ "$cur" = = ]; then
		cur=
	elif [ "$prev" = = ] && [ "$COMP_CWORD" -gt 1 ]; then
		prev=${COMP_WORDS[COMP_CWORD - 2]}
	fi
	COMPREPLY=()

	if [ "$COMP_CWORD" -le 1 ]; then
		COMPREPLY=($(compgen -W "$commands --help" -- "$cur"))
		return
	fi
	# The policy named on the line, for --door.
	for ((i = 2; i < COMP_CWORD; i++)); do
		case ${COMP_WORDS[i]} in
		--config | -config)
			if [ "${COMP_WORDS[i + 1]-}" = = ]; then config=${COMP_WORDS[i + 2]-}; else config=${COMP_WORDS[i + 1]-}; fi
			;;
		esac
	done

	case $prev in
	--config | -config)
		compopt -o filenames 2>/dev/null
		COMPREPLY=($(compgen -f -X '!*.hcl' -- "$cur") $(compgen -d -- "$cur"))
		return
		;;
	--save-packet | -save-packet | --socket | -socket)
		compopt -o filenames 2>/dev/null
		COMPREPLY=($(compgen -f -- "$cur"))
		return
		;;
	--log-format | -log-format)
		COMPREPLY=($(compgen -W "text json" -- "$cur"))
		return
		;;
	--log-level | -log-level)
		COMPREPLY=($(compgen -W "debug info warn error" -- "$cur"))
		return
		;;
	--kind | -kind)
		COMPREPLY=($(compgen -W "spa totp cluster" -- "$cur"))
		return
		;;
	--hmac-digest | -hmac-digest)
		COMPREPLY=($(compgen -W "md5 sha1 sha256 sha384 sha512 sha3_256 sha3_512" -- "$cur"))
		return
		;;
	--mode | -mode)
		COMPREPLY=($(compgen -W "cbc ctr cfb ofb ecb" -- "$cur"))
		return
		;;
	--interface | -interface)
		COMPREPLY=($(compgen -W "$(ls /sys/class/net 2>/dev/null)" -- "$cur"))
		return
		;;
	--door | -door)
		COMPREPLY=($(compgen -W "$(_knockgate_doors "$config")" -- "$cur"))
		return
		;;
	--access | -access | --allow-ip | -allow-ip | --delay | -delay | --dnat | -dnat | \
		--hmac-key-base64 | -hmac-key-base64 | --key-base64 | -key-base64 | --port | -port | \
		--queue | -queue | --queues | -queues | --server | -server | --source | -source | \
		--timeout | -timeout)
		return # a value of the user's own
		;;
	esac

	if [[ $cur == -* ]]; then
		COMPREPLY=($(compgen -W "$(_knockgate_flags "$cmd") --help" -- "$cur"))
		return
	fi
	case $cmd in
	help) COMPREPLY=($(compgen -W "$commands" -- "$cur")) ;;
	fmt)
		compopt -o filenames 2>/dev/null
		COMPREPLY=($(compgen -f -- "$cur"))
		;;
	knock | spa) COMPREPLY=($(compgen -A hostname -- "$cur")) ;;
	esac
}

complete -F _knockgate knockgate
