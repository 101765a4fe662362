package ledger

import (
	"errors"
	"math"
	"testing"
)

func TestParseAmount(t *testing.T) {
	tests := []struct {
		text, cur string
		want      int64
	}{
		{"500000", "USD", 50000000},
		{"500000.00", "USD", 50000000},
		{"0.1", "USD", 10},
		{"12.5", "EUR", 1250},
		{".5", "USD", 50},
		{"1.", "USD", 100},
		{"+7", "USD", 700},
		{"1.500", "USD", 150}, // trailing zeros are not precision
		{"1.25e3", "USD", 125000},
		{"125E-2", "USD", 125},
		{"1e2", "JPY", 100},
		{"1500", "JPY", 1500},
		{"1.234", "BHD", 1234},
		{"0001", "USD", 100},
		{"92233720368547758.07", "USD", math.MaxInt64},
	}
	for _, tc := range tests {
		got, err := ParseAmount(tc.text, tc.cur)
		if err != nil || got != tc.want {
			t.Errorf("ParseAmount(%q, %s) = %d, %v; want %d", tc.text, tc.cur, got, err, tc.want)
		}
	}
}

func TestParseAmountRejects(t *testing.T) {
	tests := []struct {
		text, cur string
		want      error
		msg       string
	}{
		{"1.001", "USD", ErrTooManyDecimals, "has 3 decimals, USD allows 2"},
		{"0.5", "JPY", ErrTooManyDecimals, "has 1 decimals, JPY allows 0"},
		{"1.0001", "BHD", ErrTooManyDecimals, "has 4 decimals, BHD allows 3"},
		{"1e-3", "USD", ErrTooManyDecimals, "has 3 decimals, USD allows 2"},
		{"0", "USD", ErrAmountNotPositive, "must be greater than zero"},
		{"0.00", "USD", ErrAmountNotPositive, ""},
		{"0e5", "USD", ErrAmountNotPositive, ""},
		{"-5", "USD", ErrAmountNotPositive, "must be positive, got -5"},
		{"-0", "USD", ErrAmountNotPositive, ""},
		{"NaN", "USD", ErrInvalidAmount, "is not a finite number"},
		{"Inf", "USD", ErrInvalidAmount, ""},
		{"+Infinity", "USD", ErrInvalidAmount, ""},
		{"", "USD", ErrInvalidAmount, ""},
		{".", "USD", ErrInvalidAmount, ""},
		{"1.2.3", "USD", ErrInvalidAmount, ""},
		{"1,000", "USD", ErrInvalidAmount, ""},
		{" 5", "USD", ErrInvalidAmount, ""},
		{"0x10", "USD", ErrInvalidAmount, ""},
		{"1e", "USD", ErrInvalidAmount, ""},
		{"1e+-2", "USD", ErrInvalidAmount, ""},
		{"1e999999999999", "USD", ErrAmountTooLarge, ""},
		{"1e99999999999999999999", "USD", ErrInvalidAmount, ""}, // exponent overflows int
		{"1e401", "USD", ErrAmountTooLarge, ""},
		{"1e300", "USD", ErrAmountTooLarge, "is too large for USD"},
		{"92233720368547758.08", "USD", ErrAmountTooLarge, ""},
		{"99999999999999999999", "JPY", ErrAmountTooLarge, ""},
		{"10", "XYZ", ErrUnknownCurrency, ""},
		{"10", "usd", ErrUnknownCurrency, ""},
	}
	for _, tc := range tests {
		got, err := ParseAmount(tc.text, tc.cur)
		if !errors.Is(err, tc.want) {
			t.Errorf("ParseAmount(%q, %s) = %d, %v; want %v", tc.text, tc.cur, got, err, tc.want)
			continue
		}
		if tc.msg != "" && err.Error() != tc.msg {
			t.Errorf("ParseAmount(%q, %s) error %q, want %q", tc.text, tc.cur, err, tc.msg)
		}
	}
}

func TestAmountTextOfDecodedJSON(t *testing.T) {
	a, b := 0.1, 0.2
	noisy := a + b
	tests := []struct {
		in   any
		want string
		err  error
	}{
		{500000.0, "500000", nil},
		{0.1, "0.1", nil},
		{noisy, "0.30000000000000004", nil}, // refused later: too many decimals
		{1e21, "1000000000000000000000", nil},
		{math.NaN(), "", ErrInvalidAmount},
		{math.Inf(1), "", ErrInvalidAmount},
		{"12.50", "12.50", nil},
		{true, "", ErrInvalidAmount},
		{nil, "", ErrInvalidAmount},
	}
	for _, tc := range tests {
		got, err := AmountText(tc.in)
		if got != tc.want || !errors.Is(err, tc.err) {
			t.Errorf("AmountText(%v) = %q, %v; want %q, %v", tc.in, got, err, tc.want, tc.err)
		}
	}
	if _, err := ParseAmount("0.30000000000000004", "USD"); !errors.Is(err, ErrTooManyDecimals) {
		t.Errorf("float noise accepted: %v", err)
	}
}

func TestFormat(t *testing.T) {
	tests := []struct {
		minor      int64
		cur        string
		plain, hum string
	}{
		{50000000, "USD", "500000.00", "USD 500,000.00"},
		{5, "USD", "0.05", "USD 0.05"},
		{1500, "JPY", "1500", "JPY 1,500"},
		{1234, "BHD", "1.234", "BHD 1.234"},
		{-123456, "EUR", "-1234.56", "EUR -1,234.56"},
		{math.MaxInt64, "USD", "92233720368547758.07", "USD 92,233,720,368,547,758.07"},
	}
	for _, tc := range tests {
		if got := FormatAmount(tc.minor, tc.cur); got != tc.plain {
			t.Errorf("FormatAmount(%d, %s) = %q, want %q", tc.minor, tc.cur, got, tc.plain)
		}
		if got := FormatHuman(tc.minor, tc.cur); got != tc.hum {
			t.Errorf("FormatHuman(%d, %s) = %q, want %q", tc.minor, tc.cur, got, tc.hum)
		}
	}
}

func FuzzParseAmount(f *testing.F) {
	for _, s := range []string{"500000", "0.1", "1.25e3", "1e-3", "-5", "NaN", "92233720368547758.07",
		"1e401", ".", "1.", "0x10", "+1.50", "1e+2", "007.700"} {
		for _, cur := range []string{"USD", "JPY", "BHD"} {
			f.Add(s, cur)
		}
	}
	f.Fuzz(func(t *testing.T, text, cur string) {
		v, err := ParseAmount(text, cur)
		if err != nil {
			var ae *AmountError
			if !errors.As(err, &ae) {
				t.Fatalf("error %v is not an *AmountError", err)
			}
			return
		}
		if v <= 0 {
			t.Fatalf("ParseAmount(%q, %s) accepted %d", text, cur, v)
		}
		back, err := ParseAmount(FormatAmount(v, cur), cur)
		if err != nil || back != v {
			t.Fatalf("round trip of %q (%s): %d -> %q -> %d, %v", text, cur, v, FormatAmount(v, cur), back, err)
		}
	})
}
