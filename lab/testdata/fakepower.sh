#!/bin/sh
# A power switch for tests: fakepower.sh NAME on|off|status|pxe|disk.
# It records the password it was given (IPMI_PASSWORD) and its arguments.
d=$FAKEPOWER_DIR
echo "$IPMI_PASSWORD" > "$d/password-seen"
echo "$*" >> "$d/argv-seen"
case $2 in
  on) echo on > "$d/power" ;;
  off) echo off > "$d/power" ;;
  status) echo "Chassis Power is $(cat "$d/power" 2>/dev/null || echo off)" ;;
  pxe|disk) echo "$2" > "$d/bootdev" ;;
  *) exit 1 ;;
esac
