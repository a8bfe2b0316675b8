package controller

import "net/http"

// registerBalanceRoutes adds the load-balancing endpoints. Filled in by the
// balancer work; empty until then.
func (c *Controller) registerBalanceRoutes(mux *http.ServeMux) {}
