"""Price lists and cost maths: plain Python and pandas, tested without Beam."""
