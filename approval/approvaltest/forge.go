package approvaltest

// Keys that lie, for tests that an approval is refused.

// Claim makes k name the credential id of another key from now on, with
// its sign counter at counter: what it signs then claims to be that key,
// and the signature must not verify.
func (k *SoftKey) Claim(id []byte, counter uint32) {
	k.id, k.Counter = append([]byte(nil), id...), counter
}

// GetWith answers navigator.credentials.get() with clientDataJSON as the
// test wrote it (another origin, extra members), signed as Get signs.
func (k *SoftKey) GetWith(clientData []byte) []byte {
	k.Counter++
	return k.assert(clientData)
}
