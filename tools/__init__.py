"""Standalone command-line tools: conversion, label noise, benchmarks. Never imported by lacol/."""
