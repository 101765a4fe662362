#!/usr/bin/env bash
# Ask Countersign for a human's countersignature over CIBA with nothing but
# curl, wait for the approver, then hand the approval token to another
# program that checks it offline against the published key set.
#
#   COUNTERSIGN_URL        the agent listener (default http://127.0.0.1:8711)
#   CLIENT_ID              an agent id from http.agents, and
#   CLIENT_SECRET          its token (both unset: an anonymous client on loopback)
#   LOGIN_HINT             who should approve: an approver id or role:NAME (default role:ops)
#   BINDING_MESSAGE        shown to the approver (default: "Release api 1.4.2")
#   AUTHORIZATION_DETAILS  the RFC 9396 array to approve (default: deploy api 1.4.2 to production)
#   COUNTERSIGN            the countersign binary for the verification step
#                          (default: countersign on PATH, else go run from this repository)
#
# Prints the verified approval on stdout and exits 0 once approved; exits 1
# when the request is denied, expires or is refused.
set -euo pipefail

base=${COUNTERSIGN_URL:-http://127.0.0.1:8711}
login_hint=${LOGIN_HINT:-role:ops}
binding=${BINDING_MESSAGE:-Release api 1.4.2}
details=${AUTHORIZATION_DETAILS:-'[{"type":"deployment","actions":["deploy"],"service":"api","version":"1.4.2","environment":"production"}]'}

auth=()
if [ -n "${CLIENT_ID:-}" ]; then
	auth=(--user "$CLIENT_ID:${CLIENT_SECRET:?CLIENT_SECRET is required with CLIENT_ID}")
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# field NAME FILE prints a string member of a JSON object; num does a
# number. Countersign's answers are flat objects, so sed is enough.
field() { sed -n 's/.*"'"$1"'" *: *"\([^"]*\)".*/\1/p' "$2" | head -n 1; }
num() { sed -n 's/.*"'"$1"'" *: *\([0-9][0-9]*\).*/\1/p' "$2" | head -n 1; }

# 1. What the verifier will trust, fetched once and kept: the issuer and
#    its key set. Nothing after this step needs Countersign to be reachable.
curl -fsS "$base/.well-known/openid-configuration" -o "$work/discovery.json"
issuer=$(field issuer "$work/discovery.json")
curl -fsS "$(field jwks_uri "$work/discovery.json")" -o "$work/jwks.json"

# 2. Ask for the countersignature.
curl -sS "${auth[@]}" "$(field backchannel_authentication_endpoint "$work/discovery.json")" \
	--data-urlencode scope=openid \
	--data-urlencode "login_hint=$login_hint" \
	--data-urlencode "binding_message=$binding" \
	--data-urlencode "authorization_details=$details" \
	-o "$work/auth.json"
id=$(field auth_req_id "$work/auth.json")
if [ -z "$id" ]; then
	echo "ciba.sh: request refused: $(cat "$work/auth.json")" >&2
	exit 1
fi
interval=$(num interval "$work/auth.json")
echo "ciba.sh: auth_req_id $id is waiting for $login_hint (expires in $(num expires_in "$work/auth.json")s)" >&2

# 3. Poll the token endpoint, as slowly as told.
token_endpoint=$(field token_endpoint "$work/discovery.json")
while :; do
	sleep "$interval"
	curl -sS "${auth[@]}" "$token_endpoint" \
		--data-urlencode grant_type=urn:openid:params:grant-type:ciba \
		--data-urlencode "auth_req_id=$id" \
		-o "$work/token.json"
	case "$(field error "$work/token.json")" in
	"") break ;;
	authorization_pending) ;;
	slow_down) interval=$((interval + 5)) ;;
	*)
		echo "ciba.sh: no countersignature: $(cat "$work/token.json")" >&2
		exit 1
		;;
	esac
done
approval_token=$(field approval_token "$work/token.json")

# 4. Hand the token on: the verifier checks it against the key set kept in
#    step 1, the issuer and the audience, and prints who approved what.
if [ -n "${COUNTERSIGN:-}" ]; then
	verify=("$COUNTERSIGN")
elif command -v countersign >/dev/null 2>&1; then
	verify=(countersign)
else
	verify=(go run -C "$(dirname "$0")/.." ./cmd/countersign)
fi
"${verify[@]}" token verify "$approval_token" --jwks "$work/jwks.json" \
	--issuer "$issuer" --audience "${CLIENT_ID:-anonymous}"
