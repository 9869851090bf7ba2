#!/bin/bash
# Experiment 1 (+2): holder keeps the connection, A SIGKILLed, then B takes over.
# usage: unshare -m --propagation private ./exp1.sh
. /tmp/handover/lib.sh; fusectl; cd $H
MNT=$H/mnt1; SOCK=$H/h1.sock; mkdir -p $MNT
./holder $SOCK 2>holder1.log & HP=$!; sleep 0.2
./lld -m $MNT -H $SOCK -T 3600 ${AFLAGS} 2>A1.log & AP=$!; sleep 0.5
C=$(conn_of $MNT); echo "conn=$C  A=$AP H=$HP"
for i in 1 2 3; do cat $MNT/labels >/dev/null; done; echo "warm read x3: $(cat $MNT/labels | head -1)"
kill -9 $AP; wait $AP 2>/dev/null; sleep 0.3
echo "after SIGKILL A: mount present: $(grep -c $MNT /proc/mounts); waiting=$(waiting $C)"
s=$(date +%s.%N); out=$(timeout -s KILL 3 cat $MNT/labels 2>&1); rc=$?; e=$(date +%s.%N)
echo "cached read: rc=$rc '$(echo $out|head -c 30)' took $(echo "($e-$s)*1000"|bc) ms"
echo "stat of cached labels: $(timeout -s KILL 3 stat -L -c %s $MNT/labels 2>&1)"
# uncached path: readers block
cat $MNT/annotations > r_plain.out 2>&1 & R1=$!
sleep 2; echo "U1 single cat on uncached path, after 2s: state=$(pstate $R1) wchan=$(cat /proc/$R1/wchan) waiting=$(waiting $C)"
kill -TERM $R1; sleep 0.5; echo "U1 after SIGTERM (default action): state=$(pstate $R1) waiting=$(waiting $C)"
kill -KILL $R1 2>/dev/null; sleep 0.5; echo "U1 after SIGKILL: state=$(pstate $R1) waiting=$(waiting $C)"
./reader -u $MNT/annotations > r_usr1.out 2>&1 & R2=$!
sleep 1; echo "U2 reader with SIGUSR1 handler: state=$(pstate $R2) wchan=$(cat /proc/$R2/wchan) waiting=$(waiting $C)"
kill -USR1 $R2; sleep 1; echo "U2 1s after SIGUSR1: state=$(pstate $R2) wchan=$(cat /proc/$R2/wchan) waiting=$(waiting $C)"
cat $MNT/annotations > r_behind.out 2>&1 & R3=$!
sleep 1; echo "U3 second reader of same name: state=$(pstate $R3) wchan=$(cat /proc/$R3/wchan) waiting=$(waiting $C)"
kill -KILL $R3; sleep 1; echo "U3 1s after SIGKILL: state=$(pstate $R3) wchan=$(cat /proc/$R3/wchan 2>/dev/null)"
sleep 5; echo "t+5s: U2=$(pstate $R2) U3=$(pstate $R3) waiting=$(waiting $C)"
echo "--- now takeover by B (mode: ${BMODE:-synth-init})"
s=$(date +%s.%N)
./lld -t $SOCK ${BFLAGS} -T 3600 2>B1.log & BP=$!
sleep 1
echo "1s after B: U2 reader=$(pstate $R2) U3 (SIGKILLed earlier)=$(pstate $R3) waiting=$(waiting $C)"
kill -INT $R2 2>/dev/null; sleep 0.3; echo "usr1-reader: $(tail -1 r_usr1.out)"; head -3 r_usr1.out
echo "fresh read via B: '$(cat $MNT/annotations 2>&1)'"
echo "ls: $(ls -a $MNT 2>&1 | tr '\n' ' ')"
kill $R1 $R2 2>/dev/null
kill -9 $BP; kill $HP; sleep 0.3
fusermount3 -uz $MNT; echo "B log:"; cat B1.log; echo "conn after cleanup: $(waiting $C)"
