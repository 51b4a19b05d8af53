#!/bin/bash
# What an operator does with the observer package on a Debian system booted with systemd as
# PID 1, each step checked against what systemd, the kernel and dpkg say rather than against
# the daemon's own word. Usage: service-check.sh IN_DIR OUT_DIR (IN_DIR holds observer.deb).
#
# OUT_DIR/results.txt gets one tab-separated line per result:
#   check NAME pass|fail DETAIL   decided here
#   fact NAME VALUE               decided on the host (the capability masks, against the unit)
# A check that never ran has no line: the host reports it as without a result.
set -u
in=$1
out=$2
results=$out/results.txt
: >"$results"

unit=observer.service
leak_port=5599
metrics=http://127.0.0.1:9977/metrics

log() { echo "check: $*"; }
check() {
    printf 'check\t%s\t%s\t%s\n' "$1" "$2" "$(echo "$3" | tr '\t\n' '  ')" >>"$results"
    log "$1: $2 ($3)"
}
pass() { check "$1" pass "$2"; }
fail() { check "$1" fail "$2"; }
fact() { printf 'fact\t%s\t%s\n' "$1" "$2" >>"$results"; }
prop() { systemctl show -p "$1" --value "$unit"; }
now() { date +%s.%N; }
# wait_for SECONDS COMMAND...: polls COMMAND until it succeeds; fails after SECONDS.
wait_for() {
    local limit=$1
    shift
    local end=$((SECONDS + limit))
    until "$@"; do
        [ "$SECONDS" -ge "$end" ] && return 1
        sleep 0.5
    done
}
cursor() { journalctl --show-cursor -n 0 -q | sed -n 's/^-- cursor: //p'; }
# PID 1's messages about the unit since a cursor (debug ones included while the log level is
# debug).
pid1_since() { journalctl -q --no-pager -o cat --after-cursor="$1" _PID=1 UNIT="$unit"; }
# A sample's value; the exposition writes an unlabelled sample as NAME{} VALUE.
metric() { curl -fsS --max-time 10 "$metrics" | awk -v m="$1" '$1 == m || $1 == m "{}" { print $2 }'; }

log "systemd $(systemctl --version | head -1), kernel $(uname -r)"
if [ "$(cat /proc/1/comm)" = systemd ]; then
    pass pid1_is_systemd "PID 1 is $(readlink /proc/1/exe)"
else
    fail pid1_is_systemd "PID 1 is $(cat /proc/1/comm)"
fi

# --- install -----------------------------------------------------------------------------
# What an operator runs; apt resolves the dependencies from what is installed (no network).
if apt-get install -y -q "$in/observer.deb" >"$out/apt-install.txt" 2>&1; then
    status=$(dpkg-query -W -f='${Status} ${Version}' observer 2>&1)
    case $status in
    "install ok installed"*) pass install "dpkg: $status" ;;
    *) fail install "dpkg: $status" ;;
    esac
else
    fail install "apt-get install failed: $(tail -3 "$out/apt-install.txt")"
fi
state=$(prop ActiveState)/$(prop SubState)
enabled=$(systemctl is-enabled "$unit" 2>&1)
if [ "$state" = active/running ] && [ "$enabled" = enabled ]; then
    pass started_by_install "$state, $enabled"
else
    fail started_by_install "$state, $enabled; $(journalctl -q -u "$unit" -n 5 --no-pager)"
fi

# --- READY=1 -----------------------------------------------------------------------------
# A fresh start with PID 1 logging at debug level, which records each notification it gets
# and each state change: active (running) must follow the daemon's READY=1, never precede it.
systemctl stop "$unit"
c=$(cursor)
systemd-analyze log-level debug
systemctl start "$unit"
start_rc=$?
systemd-analyze log-level info
main_pid=$(prop MainPID)
pid1_since "$c" >"$out/pid1-start.txt"
ready_line=$(grep -n "Got notification message from PID $main_pid (READY=1" "$out/pid1-start.txt" | head -1 | cut -d: -f1)
running_line=$(grep -n "Changed start -> running" "$out/pid1-start.txt" | head -1 | cut -d: -f1)
start_line=$(grep -n "Changed dead -> start" "$out/pid1-start.txt" | head -1 | cut -d: -f1)
if [ "$start_rc" = 0 ] && [ -n "$ready_line" ] && [ -n "$running_line" ] && [ -n "$start_line" ] &&
    [ "$start_line" -lt "$ready_line" ] && [ "$ready_line" -lt "$running_line" ]; then
    pass active_after_ready "PID 1: dead -> start (line $start_line), READY=1 from MainPID $main_pid (line $ready_line), start -> running (line $running_line); status: $(prop StatusText)"
else
    fail active_after_ready "systemctl start: $start_rc; MainPID $main_pid; start at ${start_line:-none}, READY=1 at ${ready_line:-none}, running at ${running_line:-none} (pid1-start.txt)"
fi

# --- identity and capabilities -------------------------------------------------------------
status_file=/proc/$main_pid/status
uid=$(awk '/^Uid:/ { print $2 }' "$status_file")
uids=$(awk '/^Uid:/ { print $2, $3, $4, $5 }' "$status_file")
entry=$(getent passwd observer)
user_uid=$(echo "$entry" | cut -d: -f3)
# systemd allocates dynamic users from 61184-65519 and lists them through nss-systemd only,
# never in /etc/passwd.
if [ -n "$uid" ] && [ "$uids" = "$uid $uid $uid $uid" ] && [ "$uid" = "$user_uid" ] &&
    [ "$uid" -ge 61184 ] && [ "$uid" -le 65519 ] && ! grep -q '^observer:' /etc/passwd; then
    pass dynamic_user "uid $uid (real, effective, saved, fs) = $entry, not in /etc/passwd"
else
    fail dynamic_user "Uid: $uids; getent: ${entry:-none}; /etc/passwd: $(grep '^observer:' /etc/passwd)"
fi
for field in CapInh CapPrm CapEff CapBnd CapAmb NoNewPrivs; do
    fact "$field" "$(awk -v f="$field:" '$1 == f { print $2 }' "$status_file")"
done
# The daemon is multithreaded: every thread must hold the same set as the main one.
distinct=$(cat /proc/"$main_pid"/task/*/status | grep -E '^Cap(Prm|Eff|Bnd|Amb):' | sort -u | wc -l)
threads=$(ls /proc/"$main_pid"/task | wc -l)
if [ "$distinct" = 4 ]; then
    pass same_caps_every_thread "$threads threads, one capability set"
else
    fail same_caps_every_thread "$threads threads, $distinct distinct capability lines"
fi

# --- /metrics ------------------------------------------------------------------------------
listener=$(ss -Hltnp 'sport = :9977')
curl -fsS --max-time 10 "$metrics" >"$out/metrics.txt" 2>&1
if echo "$listener" | grep -q "127.0.0.1:9977 .*pid=$main_pid," &&
    grep -Eq '^observer_tcp_close_wait_oldest_seconds(\{\})? ' "$out/metrics.txt"; then
    pass metrics "127.0.0.1:9977 is MainPID $main_pid's; $(grep -c '^observer_' "$out/metrics.txt") samples"
else
    fail metrics "listener: ${listener:-none}; body: $(grep close_wait_oldest "$out/metrics.txt" | head -3) (metrics.txt)"
fi

# --- reload --------------------------------------------------------------------------------
# The operator shortens the CLOSE_WAIT rule so the leak below fires in seconds, then reloads.
cat >/etc/observer/observer.toml <<'EOF'
[tracker]
owner_after = "1s"

[alerts]
evaluation_interval = "1s"

[[alerts.rules]]
name = "TcpCloseWaitStuck"
kind = "close_wait_age"
older_than = "5s"
EOF
c=$(cursor)
systemd-analyze log-level debug
systemctl reload "$unit"
reload_rc=$?
# systemctl returns when the ExecReload command (kill -HUP) has; the daemon's READY=1 may come
# after it.
wait_for 30 sh -c "journalctl -q -o cat --after-cursor='$c' _PID=1 UNIT=$unit | grep -q 'PID $main_pid (READY=1'"
systemd-analyze log-level info
pid1_since "$c" >"$out/pid1-reload.txt"
reloading_line=$(grep -n "PID $main_pid (RELOADING=1" "$out/pid1-reload.txt" | head -1 | cut -d: -f1)
ready_line=$(grep -n "PID $main_pid (READY=1" "$out/pid1-reload.txt" | head -1 | cut -d: -f1)
reloaded=$(journalctl -q -u "$unit" -o cat --after-cursor="$c" | grep 'configuration reloaded' | head -1)
if [ "$reload_rc" = 0 ] && [ -n "$reloading_line" ] && [ -n "$ready_line" ] &&
    [ "$reloading_line" -lt "$ready_line" ] && [ -n "$reloaded" ] &&
    [ "$(prop ActiveState)" = active ] && [ "$(prop MainPID)" = "$main_pid" ]; then
    pass reload "RELOADING=1 (line $reloading_line) then READY=1 (line $ready_line), same MainPID; daemon: $reloaded"
else
    fail reload "systemctl reload: $reload_rc; RELOADING=1 at ${reloading_line:-none}, READY=1 at ${ready_line:-none}; daemon: ${reloaded:-no reload line}; $(prop ActiveState) $(prop MainPID)"
fi

# --- a CLOSE_WAIT leak ---------------------------------------------------------------------
# A server in a unit of its own accepts one connection and never closes it; the client closes
# its end, so the server's socket sits in CLOSE_WAIT, owned by that python3.
cat >/run/observer-vm/leak.py <<END
import socket, time
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", $leak_port))
s.listen()
held, _ = s.accept()
time.sleep(100000)
END
systemd-run -q --unit=observer-vm-leak python3 /run/observer-vm/leak.py
leak_pid=$(systemctl show -p MainPID --value observer-vm-leak.service)
wait_for 20 sh -c "ss -Hltn 'sport = :$leak_port' | grep -q LISTEN"
# The client in a shell of its own: its connection closes when that shell exits.
bash -c "exec 3<>/dev/tcp/127.0.0.1/$leak_port && sleep 0.5"
leak_t0=$(now)
held=$(ss -Htnp state close-wait "( sport = :$leak_port )")
if echo "$held" | grep -q "pid=$leak_pid,"; then
    pass leak_made "kernel: $held"
else
    fail leak_made "no CLOSE_WAIT socket of pid $leak_pid on :$leak_port: ${held:-none}"
fi
# The leak's port is this boot's only one, so the whole boot's journal is searched.
firing="alert TcpCloseWaitStuck firing: 127.0.0.1:$leak_port -> "
wait_for 60 sh -c "journalctl -b -q -u $unit -o cat | grep -q '$firing'"
line=$(journalctl -b -q -u "$unit" -o cat | grep "$firing" | head -1)
if echo "$line" | grep -q ":$leak_port -> " && echo "$line" | grep -q "python3 (pid $leak_pid)" &&
    echo "$line" | grep -q "observer-vm-leak.service"; then
    pass close_wait_alert "$line"
else
    fail close_wait_alert "wanted :$leak_port, python3 (pid $leak_pid) and observer-vm-leak.service in: ${line:-no firing line within 60 s}"
fi

# --- levels in the journal -----------------------------------------------------------------
# The journal's own PRIORITY field, not the text: the firing line at warning (4), the reload
# line at info (6), and no unparsed "<N>" prefix left in any message.
warning=$(journalctl -b -q -u "$unit" -o cat -p 4..4 | grep -c "$firing")
info=$(journalctl -b -q -u "$unit" -o cat -p 6..6 | grep -c 'configuration reloaded')
prefixed=$(journalctl -b -q -u "$unit" -o cat _COMM=observer | grep -c '^<[0-7]>')
if [ "$warning" -ge 1 ] && [ "$info" -ge 1 ] && [ "$prefixed" = 0 ]; then
    pass journal_levels "firing at priority 4, reload at 6, no raw prefixes"
else
    fail journal_levels "firing lines at priority 4: $warning, reload lines at 6: $info, messages with a raw <N> prefix: $prefixed"
fi

# --- kill -9 and restart -------------------------------------------------------------------
# The restart state must hold the leak before the kill, or there is nothing to keep.
wait_for 30 grep -q "127.0.0.1:$leak_port" /var/lib/private/observer/state.json
restarts=$(prop NRestarts)
kill -9 "$main_pid"
killed_at=$(now)
wait_for 60 sh -c "[ \"\$(systemctl show -p NRestarts --value $unit)\" = $((restarts + 1)) ] && [ \"\$(systemctl show -p ActiveState --value $unit)\" = active ]"
new_pid=$(prop MainPID)
if [ "$(prop NRestarts)" = $((restarts + 1)) ] && [ "$(prop ActiveState)" = active ] &&
    [ "$new_pid" != "$main_pid" ] && [ "$new_pid" != 0 ] && ! kill -0 "$main_pid" 2>/dev/null; then
    pass restart_after_kill9 "NRestarts $restarts -> $(prop NRestarts), MainPID $main_pid -> $new_pid"
else
    fail restart_after_kill9 "NRestarts $restarts -> $(prop NRestarts), $(prop ActiveState), MainPID $main_pid -> $new_pid"
fi
main_pid=$new_pid
# The age the daemon reports must be the leak's age by this script's own clock, not the time
# since the restart.
leak_seen() { awk -v age="$(metric observer_tcp_close_wait_oldest_seconds)" 'BEGIN { exit !(age >= 1) }'; }
wait_for 30 leak_seen
age=$(metric observer_tcp_close_wait_oldest_seconds)
at=$(now)
verdict=$(awk -v age="${age:-0}" -v t0="$leak_t0" -v at="$at" -v killed="$killed_at" 'BEGIN {
    real = at - t0; since = at - killed
    # Two seconds of slack: the metric is computed at scrape time, the clocks read around it.
    ok = age >= real - 2 && age <= real + 2 && age > since + 2
    printf "%s reported %.1f s, leak made %.1f s ago, daemon killed %.1f s ago\n", ok ? "pass" : "fail", age, real, since }')
check leak_age_survives_restart "${verdict%% *}" "${verdict#* }"

# --- stop ----------------------------------------------------------------------------------
c=$(cursor)
stop_start=$(now)
systemctl stop "$unit"
stop_rc=$?
stop_s=$(awk -v a="$stop_start" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }')
result=$(prop Result)
code=$(prop ExecMainCode)
exit_status=$(prop ExecMainStatus)
timeouts=$(pid1_since "$c" | grep -ci 'timed out\|SIGKILL')
# ExecMainCode 1 is CLD_EXITED: the daemon exited by itself after SIGTERM, with status 0.
if [ "$stop_rc" = 0 ] && [ "$(prop ActiveState)" = inactive ] && [ "$result" = success ] &&
    [ "$code" = 1 ] && [ "$exit_status" = 0 ] && [ "$timeouts" = 0 ] && ! kill -0 "$main_pid" 2>/dev/null &&
    [ ! -e /run/observer ]; then
    pass clean_stop "${stop_s} s, Result=$result, exited with 0, /run/observer removed"
else
    fail clean_stop "${stop_s} s, rc $stop_rc, $(prop ActiveState), Result=$result, ExecMainCode=$code ExecMainStatus=$exit_status, timeout/kill messages: $timeouts, /run/observer: $(ls -d /run/observer 2>&1)"
fi

# --- the socket's group ---------------------------------------------------------------------
# The operator lets a group use the daemon's socket, as the README says: the group (not named
# observer: the dynamic user's own group has that name, and systemd refuses to start the unit
# when a static group takes it), the config's socket.group, and a drop-in (the dynamic user
# must be in the group to give it the socket, and the unit's system call filter denies chown).
# A member then watches without root, through the daemon; anyone else is refused.
groupadd --system observer-clients
useradd --no-create-home -G observer-clients watcher
useradd --no-create-home outsider
mkdir -p "/etc/systemd/system/$unit.d"
cat >"/etc/systemd/system/$unit.d/socket-group.conf" <<'EOF'
[Service]
SupplementaryGroups=observer-clients
SystemCallFilter=@chown
EOF
printf '\n[socket]\ngroup = "observer-clients"\n' >>/etc/observer/observer.toml
systemctl daemon-reload
systemctl start "$unit"
sock_owner=$(stat -c '%a %G' /run/observer/observer.sock 2>&1)
# A scrape of /metrics is the connection to see.
runuser -u watcher -- timeout 10 observer watch --json --port 9977 \
    >"$out/watch-member.txt" 2>"$out/watch-member.err" &
member=$!
sleep 3
curl -fsS --max-time 10 "$metrics" >/dev/null
wait "$member"
member_lines=$(grep -c '"type":"transition"' "$out/watch-member.txt")
runuser -u outsider -- timeout 10 observer watch --json --port 9977 \
    >"$out/watch-outsider.txt" 2>"$out/watch-outsider.err"
outsider_rc=$?
outsider_lines=$(grep -c '"type":"transition"' "$out/watch-outsider.txt")
if [ "$sock_owner" = "660 observer-clients" ] && [ "$member_lines" -ge 1 ] &&
    grep -q 'through the daemon' "$out/watch-member.err" &&
    [ "$outsider_rc" != 0 ] && [ "$outsider_rc" != 124 ] && [ "$outsider_lines" = 0 ] &&
    grep -q 'permission denied' "$out/watch-outsider.err"; then
    pass socket_group "socket $sock_owner; a member saw $member_lines transitions of a scrape through the daemon; a non-member was refused (exit $outsider_rc: $(head -1 "$out/watch-outsider.err"))"
else
    fail socket_group "socket: $sock_owner; member: $member_lines transitions, $(tail -2 "$out/watch-member.err"); non-member: exit $outsider_rc, $outsider_lines transitions, $(tail -2 "$out/watch-outsider.err")"
fi
# The operator's own files go before the package does.
rm -r "/etc/systemd/system/$unit.d"
userdel watcher
userdel outsider
groupdel observer-clients
sed -i '/^\[socket\]$/,$d' /etc/observer/observer.toml
systemctl daemon-reload

# --- remove and purge ----------------------------------------------------------------------
# Removed while running, as operators do (restarted without the socket's group).
systemctl restart "$unit"
running_pid=$(prop MainPID)
apt-get remove -y -q observer >"$out/apt-remove.txt" 2>&1
remove_rc=$?
status=$(dpkg-query -W -f='${Status}' observer 2>&1)
left=$(ls -d /usr/bin/observer /lib/systemd/system/observer.service 2>/dev/null)
if [ "$remove_rc" = 0 ] && [ "$status" = "deinstall ok config-files" ] && [ -z "$left" ] &&
    ! kill -0 "$running_pid" 2>/dev/null && [ -e /etc/observer/observer.toml ] &&
    [ "$(systemctl is-active "$unit")" != active ]; then
    pass remove "dpkg: $status; daemon $running_pid gone; binary and unit gone; the edited config kept"
else
    fail remove "rc $remove_rc; dpkg: $status; left: ${left:-nothing}; daemon $running_pid alive: $(kill -0 "$running_pid" 2>/dev/null && echo yes || echo no); config: $(ls /etc/observer 2>&1)"
fi
apt-get purge -y -q observer >"$out/apt-purge.txt" 2>&1
purge_rc=$?
status=$(dpkg-query -W -f='${Status}' observer 2>&1)
left=$(
    ls -d /etc/observer /var/lib/observer /var/lib/private/observer /run/observer 2>/dev/null
    find /etc/systemd /var/lib/systemd/deb-systemd-helper-enabled /var/lib/systemd/deb-systemd-helper-masked \
        -name 'observer.service*' 2>/dev/null
)
user=$(getent passwd observer)
if [ "$purge_rc" = 0 ] && ! dpkg-query -W -f='${Status}' observer 2>/dev/null | grep -q 'ok installed\|config-files' &&
    [ -z "$left" ] && [ -z "$user" ]; then
    pass purge "dpkg: ${status:-forgotten}; no config, state, runtime directory, unit links or user left"
else
    fail purge "rc $purge_rc; dpkg: $status; left: $(echo $left); user: ${user:-none}"
fi

systemctl stop observer-vm-leak.service
log "done"
