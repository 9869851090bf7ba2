#!/bin/bash
# Experiment 5: a request A had READ from /dev/fuse but not answered when it was SIGKILLed.
# A hangs on READ of annotations (-g). Then B takes over without, then with FUSE_NOTIFY_RESEND.
. /tmp/handover/lib.sh; fusectl; cd $H
MNT=$H/mnt5; SOCK=$H/h5.sock; mkdir -p $MNT
./holder $SOCK 2>holder5.log & HP=$!; sleep 0.2
./lld -m $MNT -H $SOCK -O -T 3600 -g 2>A5.log & AP=$!; sleep 0.5; C=$(conn_of $MNT)
cat $MNT/annotations > r5.out 2>&1 & R=$!; sleep 1
echo "reader blocked on READ held by A: state=$(pstate $R) waiting=$(waiting $C)"; cat A5.log | grep hanging
kill -9 $AP; sleep 0.5
kill -KILL $R; sleep 1; echo "A killed, reader SIGKILLed: state=$(pstate $R) wchan=$(cat /proc/$R/wchan 2>/dev/null) waiting=$(waiting $C)"
./lld -t $SOCK -O -T 3600 -d 2>B5a.log & BP=$!; sleep 1.5
echo "B (no resend) serving 1.5s: reader state=$(pstate $R) waiting=$(waiting $C); B saw: $(grep -c opcode B5a.log) requests"
kill -9 $BP; sleep 0.3
cat $MNT/annotations > r5b.out 2>&1 & R2=$!; sleep 0.5
./lld -t $SOCK -O -T 3600 -R -d 2>B5b.log & BP=$!; sleep 1.5
echo "B (with FUSE_NOTIFY_RESEND): SIGKILLed reader=$(pstate $R) unkilled reader=$(pstate $R2) out='$(cat r5b.out)' waiting=$(waiting $C)"
grep -E "RESEND|opcode" B5b.log | head -5
kill -9 $BP; kill $HP; kill -9 $R $R2 2>/dev/null; fusermount3 -uz $MNT
