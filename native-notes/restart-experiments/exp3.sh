#!/bin/bash
# Experiment 3: reader loop across A SIGKILL -> B takeover (holder keeps the fd).
# env: IDS=hash|counter  TMO=entry/attr timeout (s)  GAP=seconds between kill and B start
# usage: IDS=hash TMO=0 GAP=0 unshare -m --propagation private ./exp3.sh
. /tmp/handover/lib.sh; fusectl; cd $H
MNT=$H/mnt3; SOCK=$H/h3.sock; mkdir -p $MNT
IDF=; [ "$IDS" = counter ] && IDF=-c
./holder $SOCK 2>holder3.log & HP=$!; sleep 0.2
./lld -m $MNT -H $SOCK -O -T ${TMO:-0} $IDF 2>A3.log & AP=$!; sleep 0.5
C=$(conn_of $MNT)
./reader -n 8 $MNT/labels > r3.out & RP=$!
sleep 2; echo "ids=${IDS:-hash} tmo=${TMO:-0} gap=${GAP:-0}: kill -9 A at reader t~2s"
kill -9 $AP; sleep ${GAP:-0}
./lld -t $SOCK -O -T ${TMO:-0} $IDF -v 2>B3.log & BP=$!
wait $RP; grep -v "^t=.*FAIL" r3.out | head -5; grep -c FAIL r3.out | sed 's/^/FAIL lines printed: /'; grep FAIL r3.out | head -3
kill -TERM $BP; sleep 0.3; kill -9 $BP 2>/dev/null; grep -E "loop exit|ESTALE" B3.log | sort | uniq -c | head -5
kill $HP; fusermount3 -uz $MNT
