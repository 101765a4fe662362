package verify

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/countersign/countersign/audit"
	"github.com/countersign/countersign/digest"
	"github.com/countersign/countersign/vocab"
	"github.com/go-webauthn/webauthn/protocol/webauthncbor"
	"github.com/go-webauthn/webauthn/protocol/webauthncose"
)

// WebAuthn authenticator data flags.
const (
	flagUserPresent  = 0x01
	flagUserVerified = 0x04
)

func isAssertionKind(kind vocab.Kind) bool {
	return kind == vocab.KindApprovalAssertion || kind == vocab.KindApprovalDenied
}

// acceptedAlgorithms are the COSE algorithms of the credentials the
// verifier accepts: those Countersign's relying party offers at
// registration (go-webauthn's default list). The COSE parser also knows
// RS1 (RSA with SHA-1) and ES256K, which are refused here.
var acceptedAlgorithms = map[webauthncose.COSEAlgorithmIdentifier]string{
	webauthncose.AlgES256: "ES256", webauthncose.AlgES384: "ES384", webauthncose.AlgES512: "ES512",
	webauthncose.AlgEdDSA: "EdDSA",
	webauthncose.AlgRS256: "RS256", webauthncose.AlgRS384: "RS384", webauthncose.AlgRS512: "RS512",
	webauthncose.AlgPS256: "PS256", webauthncose.AlgPS384: "PS384", webauthncose.AlgPS512: "PS512",
}

// parseCredentialKey decodes an enrolled COSE_Key (base64url) and requires
// an accepted algorithm.
func parseCredentialKey(b64 string) (any, error) {
	cose, err := decodeB64URL(b64)
	if err != nil {
		return nil, fmt.Errorf("public_key is not base64url")
	}
	var head webauthncose.PublicKeyData
	if err := webauthncbor.Unmarshal(cose, &head); err != nil {
		return nil, fmt.Errorf("public_key is not a COSE_Key: %v", err)
	}
	if _, ok := acceptedAlgorithms[webauthncose.COSEAlgorithmIdentifier(head.Algorithm)]; !ok {
		return nil, fmt.Errorf("public_key has COSE algorithm %d, not one of ES256, ES384, ES512, EdDSA, RS256, RS384, RS512, PS256, PS384, PS512", head.Algorithm)
	}
	key, err := webauthncose.ParsePublicKey(cose)
	if err != nil {
		return nil, fmt.Errorf("public_key: %v", err)
	}
	return key, nil
}

// credential is an enrolled WebAuthn credential as the log records it.
type credential struct {
	key        any // parsed COSE key
	approver   string
	enrolled   int64
	revokedSeq int64 // 0 while active
}

// credentials replays enrollments and revocations in log order.
type credentials map[string]*credential

func (c credentials) apply(e *audit.Entry, key any) {
	switch e.Kind {
	case vocab.KindApproverEnrolled:
		c[e.CredentialID] = &credential{key: key, approver: e.Approver, enrolled: e.Seq}
	case vocab.KindCredentialRevoked:
		if cr := c[e.CredentialID]; cr != nil && cr.revokedSeq == 0 {
			cr.revokedSeq = e.Seq
		}
	}
}

// check interprets an entry whose kind matters to credentials, applying
// enrollments and revocations and checking assertions; it returns why an
// assertion fails, or "".
func (c credentials) check(e *audit.Entry) string {
	if !isAssertionKind(e.Kind) {
		var key any
		if e.Kind == vocab.KindApproverEnrolled {
			if e.CredentialID == "" || e.PublicKey == "" {
				return "approver.enrolled entry without credential_id and public_key"
			}
			var err error
			if key, err = parseCredentialKey(e.PublicKey); err != nil {
				return "approver.enrolled: " + err.Error()
			}
		}
		c.apply(e, key)
		return ""
	}
	if e.Signature == "" {
		return string(e.Kind) + " entry carries no WebAuthn assertion"
	}
	cr := c[e.CredentialID]
	switch {
	case e.CredentialID == "":
		return "assertion without credential_id"
	case cr == nil:
		return fmt.Sprintf("credential %s was not enrolled before this entry", e.CredentialID)
	case cr.revokedSeq != 0:
		return fmt.Sprintf("credential %s was revoked at seq %d", e.CredentialID, cr.revokedSeq)
	case cr.approver != "" && e.Approver != cr.approver:
		return fmt.Sprintf("approver %q is not the owner %q of credential %s (enrolled at seq %d)", e.Approver, cr.approver, e.CredentialID, cr.enrolled)
	}
	if err := checkAssertion(e, cr); err != nil {
		return "assertion: " + err.Error()
	}
	return ""
}

// checkAssertion recomputes the action digest from the entry and checks
// the WebAuthn assertion over it with the enrolled key: the challenge the
// key signed, the client data, the authenticator data and the signature.
// Each step fails with its own message.
func checkAssertion(e *audit.Entry, cr *credential) error {
	own, err := entryDigest(e)
	if err != nil {
		return err
	}
	challenge, what, err := assertionChallenge(e, own)
	if err != nil {
		return err
	}
	cdj, err := checkClientData(e, challenge, what)
	if err != nil {
		return err
	}
	ad, err := checkAuthenticatorData(e)
	if err != nil {
		return err
	}
	sig, err := decodeB64URL(e.Signature)
	if err != nil {
		return fmt.Errorf("signature is not base64url")
	}
	cdHash := sha256.Sum256(cdj)
	signed := append(append([]byte{}, ad...), cdHash[:]...)
	ok, err := webauthncose.VerifySignature(cr.key, signed, sig)
	if err != nil || !ok {
		return fmt.Errorf("signature does not verify with the key enrolled at seq %d", cr.enrolled)
	}
	return nil
}

// entryDigest is the action digest (package digest) of the request and
// decision the entry records.
func entryDigest(e *audit.Entry) ([32]byte, error) {
	decision := vocab.Approve
	if e.Kind == vocab.KindApprovalDenied {
		decision = vocab.Deny
	}
	if vocab.Decision(e.Decision) != decision {
		return [32]byte{}, fmt.Errorf("decision %q does not match kind %s (want %q)", e.Decision, e.Kind, decision)
	}
	args, err := hex.DecodeString(e.ArgsSHA256)
	if err != nil || len(args) != 32 {
		return [32]byte{}, fmt.Errorf("args_sha256 is not 64 hex digits")
	}
	if len(e.Args) > 0 {
		sum, err := audit.ArgsSHA256(e.Args)
		if err != nil || !bytes.Equal(sum[:], args) {
			return [32]byte{}, fmt.Errorf("args do not match args_sha256")
		}
	}
	nonce, err := decodeB64URL(e.Nonce)
	if err != nil || len(nonce) == 0 {
		return [32]byte{}, fmt.Errorf("nonce is not base64url")
	}
	if len(e.AuthorizationDetails) == 0 {
		// The server records at least [], and the digest has no form
		// for "absent".
		return [32]byte{}, fmt.Errorf("entry has no authorization_details")
	}
	expires, err := time.Parse(time.RFC3339, e.ExpiresAt)
	if err != nil {
		return [32]byte{}, fmt.Errorf("expires_at: %v", err)
	}
	a := digest.Action{
		RequestID:            e.RequestID,
		Decision:             decision,
		AuthorizationDetails: e.AuthorizationDetails,
		Tool:                 e.Tool,
		Display:              e.Display,
		Nonce:                nonce,
		ExpiresAt:            expires,
	}
	copy(a.ArgsSHA256[:], args)
	own, err := digest.Compute(a)
	if err != nil {
		return [32]byte{}, fmt.Errorf("action digest: %v", err)
	}
	return own, nil
}

// assertionChallenge is what the key must have signed over the entry's
// own action digest: it, a batch's digest (batch.go) or a grant's
// (grant.go), and what to call it in a failure.
func assertionChallenge(e *audit.Entry, own [32]byte) ([32]byte, string, error) {
	challenge, what, err := signedChallenge(e, own)
	if err != nil || e.GrantID == "" {
		return challenge, what, err
	}
	// Approving with a grant: the key signs the grant digest over the
	// request's action digest. A batch carries no grant.
	if len(e.BatchDigests) > 0 {
		return challenge, what, fmt.Errorf("a batch approval cannot create a standing grant")
	}
	if challenge, err = grantChallenge(e, own); err != nil {
		return challenge, what, err
	}
	return challenge, "the grant digest of this entry (grant id, condition, limits or the request differ)", nil
}

// checkClientData checks the client data JSON the key signed over: a
// webauthn.get of this challenge from the entry's origin, not cross
// origin. It returns the client data's bytes.
func checkClientData(e *audit.Entry, challenge [32]byte, what string) ([]byte, error) {
	cdj, err := decodeB64URL(e.ClientDataJSON)
	if err != nil {
		return nil, fmt.Errorf("client_data_json is not base64url")
	}
	var cd struct {
		Type        string `json:"type"`
		Challenge   string `json:"challenge"`
		Origin      string `json:"origin"`
		CrossOrigin bool   `json:"crossOrigin"`
	}
	if err := json.Unmarshal(cdj, &cd); err != nil {
		return nil, fmt.Errorf("client data: %v", err)
	}
	switch {
	case cd.Type != "webauthn.get":
		return nil, fmt.Errorf("client data type %q, want webauthn.get", cd.Type)
	case cd.Challenge != base64.RawURLEncoding.EncodeToString(challenge[:]):
		return nil, fmt.Errorf("challenge is not %s", what)
	case e.Origin == "":
		return nil, fmt.Errorf("entry has no origin")
	case cd.Origin != e.Origin:
		return nil, fmt.Errorf("client data origin %q, entry says %q", cd.Origin, e.Origin)
	case cd.CrossOrigin:
		return nil, fmt.Errorf("cross-origin assertion")
	}
	return cdj, nil
}

// checkAuthenticatorData checks the authenticator data: the entry's RP ID,
// user present, and user verified when the entry says so. It returns the
// data's bytes.
func checkAuthenticatorData(e *audit.Entry) ([]byte, error) {
	ad, err := decodeB64URL(e.AuthenticatorData)
	if err != nil || len(ad) < 37 {
		return nil, fmt.Errorf("authenticator_data is not base64url of at least 37 bytes")
	}
	if e.RPID == "" {
		return nil, fmt.Errorf("entry has no rp_id")
	}
	rpHash := sha256.Sum256([]byte(e.RPID))
	flags := ad[32]
	switch {
	case !bytes.Equal(ad[:32], rpHash[:]):
		return nil, fmt.Errorf("authenticator data rpIdHash is not SHA-256(%q)", e.RPID)
	case flags&flagUserPresent == 0:
		return nil, fmt.Errorf("user-present flag not set")
	case e.UserVerified && flags&flagUserVerified == 0:
		return nil, fmt.Errorf("entry claims user verification but the UV flag is not set")
	}
	return ad, nil
}

// decodeB64URL accepts base64url with or without padding, as WebAuthn
// libraries differ, but only with zero pad bits: one byte string has one
// text, so two verifiers cannot read one member two ways.
func decodeB64URL(s string) ([]byte, error) {
	return strictB64URL.DecodeString(strings.TrimRight(s, "="))
}

var strictB64URL = base64.RawURLEncoding.Strict()
