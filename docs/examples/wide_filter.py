"""A new filter network: a wider ExploitNet, by subclassing LearnabilityFilter and overriding one factory.

Run it (from the repository root; `filter_net.class_path` takes "module:Class" of any importable module):

    PYTHONPATH=docs/examples python -m ladalit.run conf=smoke.yaml filter_net.class_path=wide_filter:WideFilter
"""
from torch import nn

from ladalit.method.filter import LearnabilityFilter


class WideExploit(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(d, 512), nn.GELU())
        self.head = nn.Linear(512, 1)

    def forward(self, x):  # -> (score [n], hidden states for ExploreNet [n, h])
        h = self.body(x)
        return self.head(h).squeeze(-1), h


class WideFilter(LearnabilityFilter):
    def build_exploit_net(self):
        return WideExploit(self.embed_dim)
