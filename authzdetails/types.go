package authzdetails

// The authorization_details types Countersign renders field by field and
// has a schema for (schemas/<type>.json); any other type a tool gives is
// rendered generically and is not accepted from a CIBA client.
const (
	// TypePayment is a payment (transfer): amount, payee, accounts.
	TypePayment = "payment_initiation"
	// TypeDeployment is a deployment of a service version (deploy).
	TypeDeployment = "deployment"
	// TypeSecretAccess is the read of a secret (read_secret).
	TypeSecretAccess = "secret_access"
	// TypeMCPToolCall is a call of a tool on an upstream MCP server.
	TypeMCPToolCall = "mcp_tool_call"
)
