//go:build tools

package crds

import _ "github.com/openreports/reports-api/apis/openreports.io/v1alpha1"
