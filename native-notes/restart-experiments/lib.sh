# helpers sourced by the exp*.sh scripts (run inside: unshare -m --propagation private)
H=/tmp/handover
conn_of() { awk -v m="$1" '$5==m {split($3,a,":"); c=a[2]} END{print c}' /proc/self/mountinfo; }
fusectl() { grep -q fusectl /proc/self/mounts || mount -t fusectl none /sys/fs/fuse/connections; }
waiting() { cat /sys/fs/fuse/connections/$1/waiting 2>/dev/null || echo gone; }
pstate() { awk '{print $3}' /proc/$1/stat 2>/dev/null || echo exited; }
ts() { date +%s.%N | cut -c1-14; }
