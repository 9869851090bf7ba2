#!/bin/bash
# Experiment 4: no holder. A SIGKILLed (connection aborted); B mounts a NEW fuse mount on MNT.
# A "container" bind of MNT is made before the restart.  PROP=private|slave
# usage: PROP=slave unshare -m --propagation private ./exp4.sh
. /tmp/handover/lib.sh; fusectl; cd $H
MNT=$H/mnt4; CTR=$H/ctr; mkdir -p $MNT $CTR
./lld -m $MNT -O -T 3600 2>A4.log & AP=$!; sleep 0.5; C=$(conn_of $MNT)
if [ "$PROP" = slave ]; then mount --make-shared $MNT; mount --bind $MNT $CTR; mount --make-slave $CTR
else mount --bind $MNT $CTR; fi
grep -E "mnt4|ctr" /proc/self/mountinfo | awk '{print "  mountinfo:", $5, $7}'
for i in 1 2 3; do cat $CTR/labels >/dev/null; done        # warm labels through the bind
(cd $CTR; exec 9<$CTR/labels; sleep 30) & HOLDP=$!           # a "container process": cwd + open fd in the bind
sleep 0.3
kill -9 $AP; sleep 0.5
echo "[$PROP] A killed, no holder: conn waiting=$(waiting $C) aborted? $(cat /sys/fs/fuse/connections/$C/waiting 2>&1 >/dev/null || true)"
r() { timeout -s KILL 3 cat "$1" 2>&1 | head -1; }
echo "  cached  $CTR/labels      -> '$(r $CTR/labels)'"
echo "  uncached $CTR/annotations -> '$(r $CTR/annotations)'"
echo "  stat $MNT -> $(stat -c %i $MNT 2>&1)"
echo "  open fd 9 of holder proc: '$(timeout 3 cat /proc/$HOLDP/fd/9 2>&1|head -1)'  cwd ls: $(timeout 3 ls /proc/$HOLDP/cwd/ 2>&1 | tr '\n' ' ')"
echo "  libfuse fuse_session_mount on dead MNT:"; timeout 5 ./lld -m $MNT -O 2>&1 | head -2 | sed 's/^/    /'
./lld -M $MNT -O -T 3600 2>B4.log & BP=$!; sleep 0.5; cat B4.log | sed 's/^/    B: /'
grep -E "mnt4|ctr" /proc/self/mountinfo | awk '{print "  mountinfo:", $5, $7, $(NF-2)}'
echo "  after B (stacked on dead mount): via MNT annotations -> '$(r $MNT/annotations)'"
echo "  via CTR: cached labels -> '$(r $CTR/labels)'  uncached annotations -> '$(r $CTR/annotations)'"
echo "  holder proc's open fd -> '$(timeout 3 cat /proc/$HOLDP/fd/9 2>&1|head -1)'"
# variant: lazily unmount the dead mount first, then mount fresh
kill -9 $BP; sleep 0.3; umount -l $MNT; umount -l $MNT 2>/dev/null
./lld -M $MNT -O -T 3600 2>B4b.log & BP=$!; sleep 0.5
echo "  umount -l MNT (all layers) then fresh mount: via MNT -> '$(r $MNT/annotations)'  via CTR -> '$(r $CTR/annotations)'"
kill -9 $BP $HOLDP; sleep 0.3
for m in $CTR $CTR $MNT $MNT; do umount -l $m 2>/dev/null; done
grep -E "mnt4|ctr" /proc/self/mountinfo | wc -l | sed 's/^/  leftover mounts: /'
