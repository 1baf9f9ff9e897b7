#!/usr/bin/env bash
# Format and lint check of the console's, the agent-desktop adapter's and the webhook tests'
# JavaScript for CI:
# the pinned Biome (console/package.json, config in console/biome.jsonc) in `biome ci` mode,
# which changes no file and fails on any formatting difference, unsorted import or lint
# finding (warnings included). Installs the npm packages when they are missing or stale.
#
#   bash console/lint.sh
#
# To fix what it reports: cd console && node_modules/.bin/biome check --write . ../agent-desktop ../tests/webhooks
set -euo pipefail

die() {
    printf 'console/lint.sh: FAILED: %s\n' "$*" >&2
    exit 1
}

cd "$(dirname "${BASH_SOURCE[0]}")"

command -v node >/dev/null 2>&1 || die "Node.js is needed to run Biome"

# npm ci only when node_modules is missing or was installed from another lock file (the
# same stamp as ci.sh, so that one install serves both).
lock_sum=$(sha256sum package-lock.json | cut -d' ' -f1)
stamp=node_modules/.ci-package-lock.sha256
if [[ ! -f "$stamp" || "$(cat "$stamp")" != "$lock_sum" || ! -x node_modules/.bin/biome ]]; then
    command -v npm >/dev/null 2>&1 || die "npm is missing"
    echo "installing the console's npm packages (npm ci)"
    # Biome's install script only checks for its platform binary; none is run.
    PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --ignore-scripts --no-audit --no-fund || die "npm ci failed"
    echo "$lock_sum" >"$stamp"
fi

node_modules/.bin/biome --version
node_modules/.bin/biome ci --colors=off --error-on-warnings --max-diagnostics=none . ../agent-desktop ../tests/webhooks ||
    die "Biome found formatting or lint problems (fix: cd console && node_modules/.bin/biome check --write . ../agent-desktop ../tests/webhooks)"
echo "console/lint.sh: Biome found nothing in console/, agent-desktop/ and tests/webhooks/"
