#!/usr/bin/env bash
# The ops console's browser tests (SPEC 9) for CI: Debian's Chromium driven by
# playwright-core (from npm; it downloads no browser) against the release binary named by
# AGENTASSIST_HOOKS_BINARY, on a fresh embedded SQLite database the tests make themselves.
# Installs Chromium and the npm packages when they are missing; fails loudly, never skips.
#
#   AGENTASSIST_HOOKS_BINARY=target/ci-release/agentassist-hooks bash console/ci.sh
#
# Screenshots of every page at 1280 and 390 px wide are left in target/console-screenshots/.
set -euo pipefail

die() {
    printf 'console/ci.sh: FAILED: %s\n' "$*" >&2
    exit 1
}

[[ -n "${AGENTASSIST_HOOKS_BINARY:-}" ]] || die "set AGENTASSIST_HOOKS_BINARY to the release binary"
# Resolved before leaving the caller's directory, so a relative path works.
binary=$(realpath -- "$AGENTASSIST_HOOKS_BINARY") || die "no binary at $AGENTASSIST_HOOKS_BINARY"
[[ -x "$binary" ]] || die "$binary is not an executable"

cd "$(dirname "${BASH_SOURCE[0]}")"

readonly CHROMIUM=${CHROMIUM_PATH:-/usr/bin/chromium}
readonly NODE_MAJOR_MIN=20

# Chromium from Debian's packages: npm cannot download a browser here, and need not.
if [[ ! -x "$CHROMIUM" ]]; then
    command -v apt-get >/dev/null 2>&1 || die "Chromium is missing at $CHROMIUM and there is no apt-get to install it"
    echo "Chromium is missing; installing it from Debian's packages"
    apt-get update || die "apt-get update failed"
    DEBIAN_FRONTEND=noninteractive apt-get install -y chromium || die "could not install chromium"
fi
# The launcher script prints a harmless warning on some machines; the version must come out.
chromium_version=$("$CHROMIUM" --version 2>/dev/null) || die "$CHROMIUM does not run"
echo "$chromium_version"

command -v node >/dev/null 2>&1 || die "Node.js ${NODE_MAJOR_MIN} or newer is needed (the tests use playwright-core)"
node -e "process.exit(Number(process.versions.node.split('.')[0]) >= ${NODE_MAJOR_MIN} ? 0 : 1)" ||
    die "Node.js $(node --version) is older than ${NODE_MAJOR_MIN}, which playwright-core needs"
echo "node $(node --version)"

# npm ci only when node_modules is missing or was installed from another lock file.
lock_sum=$(sha256sum package-lock.json | cut -d' ' -f1)
stamp=node_modules/.ci-package-lock.sha256
if [[ ! -f "$stamp" || "$(cat "$stamp")" != "$lock_sum" || ! -d node_modules/playwright-core ]]; then
    command -v npm >/dev/null 2>&1 || die "npm is missing"
    echo "installing the console's test dependencies (npm ci)"
    # playwright-core has no install script; none is run, and no browser is fetched.
    PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --ignore-scripts --no-audit --no-fund || die "npm ci failed"
    echo "$lock_sum" >"$stamp"
fi

AGENTASSIST_HOOKS_BINARY="$binary" CHROMIUM_PATH="$CHROMIUM" node --test test/ ||
    die "the console's browser tests failed (screenshots so far in target/console-screenshots/)"
echo "console: browser tests passed; screenshots in target/console-screenshots/"
