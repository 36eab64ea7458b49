# bash completion for snapbuild(1), the client of snapbuildd(8).
#
# Completes commands, subcommands, flags and their values. Job ids come from the daemon
# itself (`snapbuild jobs -o json`), asked quietly and with a deadline, so a daemon that is
# down or slow never shows an error or holds up the shell; the --socket given on the
# command line is used for that question too.

# Job ids of the caller's jobs, one a line; nothing when the daemon cannot be reached.
_snapbuild_job_ids()
{
	local -a cmd=("${1:-snapbuild}")
	[[ -n $2 ]] && cmd+=(--socket "$2")
	local json
	if type -P timeout >/dev/null; then
		json=$(timeout 2 "${cmd[@]}" -o json jobs 2>/dev/null </dev/null) || return 0
	else
		json=$("${cmd[@]}" -o json jobs 2>/dev/null </dev/null) || return 0
	fi
	[[ -n $json ]] || return 0
	if type -P python3 >/dev/null; then
		python3 -c '
import json, sys
try:
    for job in json.load(sys.stdin).get("jobs", []):
        if isinstance(job, dict) and isinstance(job.get("id"), str):
            print(job["id"])
except (ValueError, AttributeError):
    pass
' <<<"$json" 2>/dev/null
	else
		# Without python3: the "id" members, which only jobs carry at this depth in
		# practice; good enough for completion.
		grep -o '"id"[[:space:]]*:[[:space:]]*"[^"]*"' <<<"$json" |
			sed 's/.*:[[:space:]]*"\(.*\)"$/\1/'
	fi
}

# Options that take a value, globally and per command (create's and context's -f is
# --dockerfile, logs' -f is --follow, prune's -f is --force).
_snapbuild_takes_value()
{
	case $2 in
	--socket | -o | --output) return 0 ;;
	esac
	case $1:$2 in
	create:--context | create:-c | create:--dockerfile | create:--file | create:-f | \
		create:--image | create:-i | create:--alias | create:-a | create:-t | \
		create:--cache-key | create:-k | create:--ttl | create:--tag | \
		create:--build-arg | create:--arch | create:--progress | \
		context:--dockerfile | context:-f | context:--save | \
		jobs:--state | jobs:--limit | jobs:--cursor | ls:--state | ls:--limit | \
		ls:--cursor | logs:--after | prune:--older-than | snapshots:--limit | \
		snapshots:--cursor | snapshots:--tag | snapshots:--page-size | snapshot:--limit | \
		snapshot:--cursor | snapshot:--tag | snapshot:--page-size)
		return 0
		;;
	esac
	return 1
}

_snapbuild()
{
	local cur prev words cword
	if declare -F _init_completion >/dev/null; then
		_init_completion -n = || return
	else
		cur=${COMP_WORDS[COMP_CWORD]}
		prev=${COMP_WORDS[COMP_CWORD - 1]}
		words=("${COMP_WORDS[@]}")
		cword=$COMP_CWORD
	fi

	local commands="create jobs ls logs inspect wait cancel retry prune context snapshots
		snapshot daemon version help"

	# The command, and the words after it that are not options (the subcommand of
	# snapshots/daemon, job ids, a directory), skipping options and their values.
	local i command="" socket="" skip_value=0
	local -a args=()
	for ((i = 1; i < cword; i++)); do
		if ((skip_value)); then
			skip_value=0
			continue
		fi
		case ${words[i]} in
		--socket) socket=${words[i + 1]} ;;
		--socket=*) socket=${words[i]#--socket=} ;;
		esac
		if [[ ${words[i]} == -* ]]; then
			_snapbuild_takes_value "$command" "${words[i]}" && skip_value=1
		elif [[ -z $command ]]; then
			command=${words[i]}
		else
			args+=("${words[i]}")
		fi
	done

	# The value of the option before the cursor.
	if ((skip_value)); then
		case $command:$prev in
		*:--socket)
			_snapbuild_files socket
			;;
		*:-o | *:--output)
			COMPREPLY=($(compgen -W "table json" -- "$cur"))
			;;
		create:--context | create:-c)
			_snapbuild_files dir
			;;
		*:--dockerfile | *:--file | create:-f | context:-f | *:--save)
			_snapbuild_files file
			;;
		create:--arch)
			COMPREPLY=($(compgen -W "amd64 arm64" -- "$cur"))
			;;
		create:--progress)
			COMPREPLY=($(compgen -W "auto tty plain quiet" -- "$cur"))
			;;
		*:--state)
			COMPREPLY=($(compgen -W "packing queued uploading building pushing
				registering aliasing cancelling succeeded failed cancelled" -- "$cur"))
			;;
		esac
		return
	fi

	if [[ -z $command ]]; then
		if [[ $cur == -* ]]; then
			COMPREPLY=($(compgen -W "--socket -o --output --json -h --help --version" -- "$cur"))
		else
			COMPREPLY=($(compgen -W "$commands" -- "$cur"))
		fi
		return
	fi

	local opts="--help" jobs=0
	local create_opts=" --context -c --dockerfile --file -f --image -i --alias -a -t
		--cache-key -k --ci --ttl --tag --build-arg --local --remote --arch --no-cache
		--detach -d --quiet -q --progress -o"
	# `snapshots create` is `create`: its options and values are create's.
	if [[ $command == snapshot* && ${args[0]-} == create ]]; then
		command=create
	fi
	case $command in
	create)
		opts+=$create_opts
		;;
	jobs | ls)
		opts+=" --state --limit --cursor --all-users --no-trunc -o"
		;;
	logs)
		opts+=" -f --follow --raw --after -o"
		((${#args[@]} == 0)) && jobs=1
		;;
	inspect | wait | retry)
		opts+=" -o"
		((${#args[@]} == 0)) && jobs=1
		;;
	cancel)
		opts+=" -o"
		jobs=1
		;;
	prune)
		opts+=" --older-than --all --force -f --all-users -o"
		;;
	context)
		opts+=" --dockerfile --files --save --no-cache -o"
		if [[ $cur != -* && ${#args[@]} -eq 0 ]]; then
			_snapbuild_files dir
			return
		fi
		;;
	snapshots | snapshot)
		case ${args[0]-} in
		"")
			if [[ $cur == -* ]]; then
				COMPREPLY=($(compgen -W "--help" -- "$cur"))
			else
				COMPREPLY=($(compgen -W "create list get alias unalias retire help" -- "$cur"))
			fi
			return
			;;
		list) opts+=" --limit --cursor --exclude-retired --tag --page-size --ci -o" ;;
		help)
			((${#args[@]} == 1)) &&
				COMPREPLY=($(compgen -W "create list get alias unalias retire" -- "$cur"))
			return
			;;
		*) opts+=" -o" ;;
		esac
		;;
	daemon)
		if [[ $cur != -* && ${#args[@]} -eq 0 ]]; then
			COMPREPLY=($(compgen -W "info metrics" -- "$cur"))
			return
		fi
		opts+=" -o"
		;;
	version)
		opts+=" -o"
		;;
	help)
		if [[ $cur == -* ]]; then
			COMPREPLY=($(compgen -W "--help" -- "$cur"))
		elif ((${#args[@]} == 0)); then
			COMPREPLY=($(compgen -W "$commands" -- "$cur"))
		fi
		return
		;;
	*)
		return
		;;
	esac

	if [[ $cur == -* ]]; then
		COMPREPLY=($(compgen -W "$opts" -- "$cur"))
	elif ((jobs)); then
		# Offer each job once: cancel takes several, and not the same one twice.
		local id ids=""
		while IFS= read -r id; do
			[[ " ${args[*]} " == *" $id "* ]] || ids+="$id "
		done < <(_snapbuild_job_ids "${words[0]}" "$socket")
		COMPREPLY=($(compgen -W "$ids" -- "$cur"))
	fi
}

# File names of one kind (file, dir, socket), with bash-completion's helpers when loaded.
_snapbuild_files()
{
	if declare -F _filedir >/dev/null; then
		case $1 in
		dir) _filedir -d ;;
		*) _filedir ;;
		esac
	else
		case $1 in
		dir) COMPREPLY=($(compgen -d -- "$cur")) ;;
		*) COMPREPLY=($(compgen -f -- "$cur")) ;;
		esac
	fi
}

complete -F _snapbuild snapbuild
