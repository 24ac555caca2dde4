#!/bin/sh
# A simple test: any executable; exit status 0 is PASS.
echo "this goes to the test's stdout file"
exit 0
