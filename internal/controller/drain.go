package controller

import "net/http"

// registerDrainRoutes adds the host-maintenance (drain/activate) and HA
// endpoints. Filled in by the drain work; empty until then.
func (c *Controller) registerDrainRoutes(mux *http.ServeMux) {}
