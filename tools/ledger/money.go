package ledger

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
)

// minorUnits is the number of decimal places of each supported ISO 4217
// currency (ISO 4217 "minor unit" column). A currency missing here is
// refused: guessing its precision could move money by a factor of 100.
var minorUnits = map[string]int{
	"USD": 2, "EUR": 2, "GBP": 2, "CHF": 2, "CAD": 2, "AUD": 2, "NZD": 2,
	"SEK": 2, "NOK": 2, "DKK": 2, "PLN": 2, "CZK": 2, "HKD": 2, "SGD": 2,
	"CNY": 2, "INR": 2, "MXN": 2, "BRL": 2, "ZAR": 2, "ILS": 2, "TRY": 2,
	"JPY": 0, "KRW": 0, "ISK": 0, "CLP": 0, "VND": 0, "HUF": 2,
	"BHD": 3, "KWD": 3, "JOD": 3, "OMR": 3, "TND": 3, "IQD": 3, "LYD": 3,
}

// Errors a caller can test with errors.Is; each arrives wrapped in an
// *AmountError whose text says what exactly was wrong.
var (
	ErrUnknownCurrency   = errors.New("unknown currency")
	ErrInvalidAmount     = errors.New("not a decimal number")
	ErrAmountNotPositive = errors.New("amount not positive")
	ErrTooManyDecimals   = errors.New("too many decimals")
	ErrAmountTooLarge    = errors.New("amount too large")
)

// AmountError explains why an amount was refused. Error() is meant for the
// agent, e.g. "has 3 decimals, USD allows 2"; errors.Is matches its Kind.
type AmountError struct {
	Kind error
	Msg  string
}

func (e *AmountError) Error() string { return e.Msg }
func (e *AmountError) Unwrap() error { return e.Kind }

func amountErr(kind error, format string, args ...any) error {
	return &AmountError{Kind: kind, Msg: fmt.Sprintf(format, args...)}
}

// MinorUnits returns the decimal places of currency, or an error wrapping
// ErrUnknownCurrency.
func MinorUnits(currency string) (int, error) {
	d, ok := minorUnits[currency]
	if !ok {
		return 0, amountErr(ErrUnknownCurrency, "unknown currency %q (known: ISO 4217 codes such as USD, EUR, JPY, BHD)", currency)
	}
	return d, nil
}

// maxExponent bounds the exponent of "1e5"-style text so that a hostile
// "1e999999999" is refused before any arithmetic.
const maxExponent = 400

// maxAmountText bounds the text parsed; a float64 such as 1e300 formats to
// about 300 digits and deserves "too large" rather than "too long".
const maxAmountText = 1000

// ParseAmount converts a transfer amount in major units to minor units of
// currency, exactly, from its decimal text ("500000", "12.5", "1.25e3").
// It refuses text that is not a plain decimal, more decimals than the
// currency has (trailing zeros do not count), zero, negative values and
// anything that does not fit in an int64 of minor units.
func ParseAmount(text, currency string) (int64, error) {
	v, err := parseDecimal(text, currency)
	if err != nil {
		return 0, err
	}
	if v == 0 {
		return 0, amountErr(ErrAmountNotPositive, "must be greater than zero")
	}
	return v, nil
}

// ParseBalance is ParseAmount for a starting balance, which may be zero.
func ParseBalance(text, currency string) (int64, error) {
	return parseDecimal(text, currency)
}

func parseDecimal(text, currency string) (int64, error) {
	places, err := MinorUnits(currency)
	if err != nil {
		return 0, err
	}
	s := text
	if s == "" {
		return 0, amountErr(ErrInvalidAmount, "is empty, expected a decimal number such as 1250.00")
	}
	if len(s) > maxAmountText {
		return 0, amountErr(ErrInvalidAmount, "is %d characters long, expected a decimal number such as 1250.00", len(s))
	}
	switch s[0] {
	case '-':
		return 0, amountErr(ErrAmountNotPositive, "must be positive, got %s", s)
	case '+':
		s = s[1:]
	}
	if l := strings.ToLower(s); strings.Contains(l, "inf") || strings.Contains(l, "nan") {
		return 0, amountErr(ErrInvalidAmount, "is not a finite number")
	}
	mant, exp := s, 0
	if i := strings.IndexAny(s, "eE"); i >= 0 {
		mant = s[:i]
		e, err := strconv.Atoi(s[i+1:])
		if err != nil || s[i+1:] == "" || strings.HasPrefix(s[i+1:], "+-") {
			return 0, amountErr(ErrInvalidAmount, "has a malformed exponent: %q", text)
		}
		if e > maxExponent || e < -maxExponent {
			return 0, amountErr(ErrAmountTooLarge, "has exponent %d, out of range", e)
		}
		exp = e
	}
	intPart, frac, hasDot := strings.Cut(mant, ".")
	if (intPart == "" && frac == "") || !digits(intPart) || !digits(frac) || (hasDot && strings.Contains(frac, ".")) {
		return 0, amountErr(ErrInvalidAmount, "is not a decimal number: %q", text)
	}
	// The value is all * 10^(exp - len(frac)). Move the decimal point.
	all := strings.TrimLeft(intPart+frac, "0")
	scale := exp - len(frac) // power of ten applied to all
	if all == "" {
		return 0, nil
	}
	// Trailing zeros are not precision: strip them into the scale.
	trimmed := strings.TrimRight(all, "0")
	scale += len(all) - len(trimmed)
	all = trimmed
	if -scale > places {
		return 0, amountErr(ErrTooManyDecimals, "has %d decimals, %s allows %d", -scale, currency, places)
	}
	// minor = all * 10^(scale + places), scale+places >= 0 here.
	zeros := scale + places
	if len(all)+zeros > 19 {
		return 0, amountErr(ErrAmountTooLarge, "is too large for %s", currency)
	}
	v, err := strconv.ParseInt(all+strings.Repeat("0", zeros), 10, 64)
	if err != nil {
		return 0, amountErr(ErrAmountTooLarge, "is too large for %s", currency)
	}
	return v, nil
}

func digits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// AmountText returns the decimal text of an amount as it arrived in
// decoded JSON: a float64 (the shortest text that round-trips, so 0.1
// stays "0.1"), a json.Number, an integer, or a decimal string.
func AmountText(v any) (string, error) {
	switch x := v.(type) {
	case float64:
		if math.IsNaN(x) || math.IsInf(x, 0) {
			return "", amountErr(ErrInvalidAmount, "is not a finite number")
		}
		return strconv.FormatFloat(x, 'f', -1, 64), nil
	case json.Number:
		return string(x), nil
	case string:
		return x, nil
	case int:
		return strconv.Itoa(x), nil
	case int64:
		return strconv.FormatInt(x, 10), nil
	case nil:
		return "", amountErr(ErrInvalidAmount, "is missing")
	}
	return "", amountErr(ErrInvalidAmount, "must be a number, got %T", v)
}

// FormatAmount renders minor units as plain decimal text in major units,
// e.g. 50000000 USD -> "500000.00", 1500 JPY -> "1500".
func FormatAmount(minor int64, currency string) string {
	places := minorUnits[currency]
	neg := minor < 0
	u := uint64(minor)
	if neg {
		u = -u
	}
	s := strconv.FormatUint(u, 10)
	if places > 0 {
		if len(s) <= places {
			s = strings.Repeat("0", places-len(s)+1) + s
		}
		s = s[:len(s)-places] + "." + s[len(s)-places:]
	}
	if neg {
		s = "-" + s
	}
	return s
}

// FormatHuman renders an amount for people: "USD 500,000.00".
func FormatHuman(minor int64, currency string) string {
	s := FormatAmount(minor, currency)
	sign := ""
	if strings.HasPrefix(s, "-") {
		sign, s = "-", s[1:]
	}
	intPart, frac, hasDot := strings.Cut(s, ".")
	var b strings.Builder
	for i, r := range intPart {
		if i > 0 && (len(intPart)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(r)
	}
	if hasDot {
		b.WriteString("." + frac)
	}
	return currency + " " + sign + b.String()
}
