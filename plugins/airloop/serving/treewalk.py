"""The compiled walk of a flat tree table (numba): :func:`walk` adds, for each row of ``x`` and each tree in
order, the value of the leaf the row reaches to ``out[row, column[tree]]``. Its own module so numba is
imported only by a server that scores hist gradient boosting, and its cache (``cache=True``: compiled once
per machine, loaded afterwards) sits beside this file.

The walk is scikit-learn's ``_predict_one_from_raw_data`` for numeric splits: a NaN follows
``missing_go_to_left``, else ``x <= threshold`` goes left. The table comes from
:func:`airloop.serving.compiled._flat_trees`.
"""

from __future__ import annotations

import numba
import numpy as np


@numba.njit(cache=True)
def walk(x, roots, column, feature, threshold, left, right, leaf, nan_left, value, out):  # pragma: no cover
    for i in range(x.shape[0]):
        for t in range(roots.shape[0]):
            node = roots[t]
            while not leaf[node]:
                v = x[i, feature[node]]
                if np.isnan(v):
                    node = left[node] if nan_left[node] else right[node]
                elif v <= threshold[node]:
                    node = left[node]
                else:
                    node = right[node]
            out[i, column[t]] += value[node]
