#!/usr/bin/env bash
# THE test command (README command 2; .ci/run runs exactly this).
#   1. installs what the tests need when it is missing (as root, with apt-get):
#      etcdctl (etcd-client), etcd (etcd-server), openssl, iproute2, iptables, procps, perl, strace,
#      systemd-analyze (systemd), bash >= 4.4
#   2. dotnet build -c Release KvStore.sln   (warnings are errors)
#   3. dotnet test on the whole solution: one summary line per test project (failures in full), TRX files in
#      artifacts/test-results/
#   4. prints one totals line, "N passed, M failed" (", K skipped" when some were skipped), and exits
#      non-zero if anything failed, was skipped (skipping is not allowed here), or if no test ran.
# Environment: KVSTORE_E2E_SERVER=etcd runs the end-to-end tests against real etcd instead of kvstore.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
root=$PWD
started=$(date +%s)

# --- 1. tools ----------------------------------------------------------------------------------
missing=()
need() { # COMMAND PACKAGE   (sbin tools may be off a non-root PATH)
  command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ] || [ -x "/sbin/$1" ] || missing+=("$2")
}
need etcdctl etcd-client
need etcd etcd-server
need openssl openssl
need ip iproute2
need iptables iptables
need ps procps
need perl perl
need strace strace
need systemd-analyze systemd
if (( BASH_VERSINFO[0] < 4 || (BASH_VERSINFO[0] == 4 && BASH_VERSINFO[1] < 4) )); then
  missing+=(bash)
fi

if (( ${#missing[@]} > 0 )); then
  echo "run-all: installing missing packages: ${missing[*]}"
  if [ "$(id -u)" -eq 0 ]; then
    as_root=()
  elif command -v sudo >/dev/null 2>&1; then
    as_root=(sudo)
  else
    echo "run-all: need root (or sudo) to apt-get install ${missing[*]}" >&2
    exit 1
  fi
  "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q
  "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

command -v dotnet >/dev/null 2>&1 || { echo "run-all: the .NET 10 SDK (dotnet) is not installed; see README.md" >&2; exit 1; }
unset ETCDCTL_API ETCDCTL_ENDPOINTS

# --- 2. build ----------------------------------------------------------------------------------
dotnet build -c Release KvStore.sln -nologo || { echo "run-all: build failed (no test ran)" >&2; exit 1; }

# --- 3. test -----------------------------------------------------------------------------------
results="$root/artifacts/test-results"
rm -rf "$results"
mkdir -p "$results"
set +e
# A test that hangs is killed after 10 minutes (its host is aborted and the run fails).
dotnet test KvStore.sln -c Release --no-build -nologo \
  --logger "console;verbosity=minimal" --logger trx --results-directory "$results" \
  --blame-hang-timeout 10m --blame-hang-dump-type none
test_rc=$?
set -e

# --- 4. totals from the TRX files --------------------------------------------------------------
passed=0 failed=0 skipped=0 files=0
shopt -s nullglob globstar
for trx in "$results"/**/*.trx; do
  files=$((files + 1))
  # Count the <UnitTestResult ... outcome="..."> elements (a skipped test is outcome="NotExecuted" and does not
  # show in <Counters>); tests the run never reached (total - executed) count as skipped too.
  read -r p f s < <(perl -0777 -ne '
    my ($p, $f, $s) = (0, 0, 0);
    while (/<UnitTestResult\b[^>]*\boutcome="(\w+)"/g) {
      if ($1 eq "Passed") { $p++ } elsif ($1 =~ /^(Failed|Error|Timeout|Aborted)$/) { $f++ } else { $s++ }
    }
    if (/<Counters\b[^>]*\btotal="(\d+)"[^>]*\bexecuted="(\d+)"/) { my $gap = $1 - $2 - $s; $s += $gap if $gap > 0 }
    print "$p $f $s\n";' "$trx")
  passed=$((passed + ${p:-0})) failed=$((failed + ${f:-0})) skipped=$((skipped + ${s:-0}))
done

elapsed=$(( $(date +%s) - started ))
echo
echo "run-all: $files test result file(s) in $results; dotnet test exit code $test_rc; ${elapsed}s in all"
(( test_rc == 0 )) || (( failed > 0 )) || echo "run-all: dotnet test failed without a failed test in the results (a test host crashed or was aborted?)"
(( passed + failed + skipped > 0 )) || echo "run-all: no test ran"
(( skipped == 0 )) || echo "run-all: $skipped test(s) skipped; skipping is not allowed, it counts as a failure"

totals="$passed passed, $failed failed"
(( skipped == 0 )) || totals+=", $skipped skipped"
echo "$totals"

if (( test_rc != 0 || failed > 0 || skipped > 0 || passed == 0 )); then
  exit 1
fi
